// Package rules is citywatch's rule engine: it sits between ingest and
// dispatch, reads normalised events (event.Event), runs the rules of a rule
// file on event time, and raises alerts (CONTRACT.md section 3) with
// deterministic ids and a lifecycle of firing, updated and resolved.
//
// Rules are data. A rule file (YAML, see RuleFile) holds rule instances of
// seven kinds, each in its own file: match (kind_match.go), threshold,
// velocity, sequence, absence, geofence and co-occurrence. Parse and Compile
// turn a file into a RuleSet; an Engine runs one RuleSet at a time and takes
// a new one without losing the state of the rules that did not change
// (Engine.Offer, Reloader). The default rule pack of CONTRACT.md section 6,
// with a sample vehicle hotlist and person watchlist, is embedded
// (DefaultRules, DefaultHotlist, DefaultWatchlist).
//
// # Time
//
// Rules run on event time. The engine's stream time is the highest event
// time it has seen; while no input arrives it moves on with the wall clock
// from the moment the last event arrived (Engine.Advance), so that silence
// is detected. The watermark is stream time minus the allowed lateness
// (Config.Lateness). Events are evaluated as they arrive, so an alert is
// raised within the call that receives its last event; windows, timeouts
// and alert resolution move on the watermark. An event older than the
// watermark is late: it is counted (citywatch_rules_late_events_total) and
// raises nothing. Because only event times and the order of arrival decide
// what is raised, a recorded stream replayed at any speed raises the same
// alerts, with the same ids.
//
// # State
//
// Every per-key table is bounded (Config.MaxKeys, least recently updated
// key evicted first) and expires keys whose last event has left the rule's
// window; its size is exported as citywatch_rules_state_keys and
// citywatch_rules_state_bytes, by rule. Keys are plates, pseudonyms and
// device ids; they never appear in metric labels.
//
// # The role
//
// Role runs an Engine as the rules role of citywatch: it consumes the
// internal events topic, writes alerts to the alerts topic before it
// commits, advances the engine with the clock, reloads the rule file, and
// rebuilds its state on start from the alerts topic and a replay of the
// input (see Role for what a restart promises). Scaled out, its processes
// forward the input to a repartition topic keyed by subject and share its
// partitions, the shards of the rules' keys (Role, "Scale-out").
//
// # Concurrency
//
// An Engine is owned by one goroutine: Process and Advance must not be
// called concurrently. Offer is the only method safe to call from any
// goroutine; the owner picks the new rule set up at its next call.
package rules
