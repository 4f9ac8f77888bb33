// Package dispatch is citywatch's dispatcher for the 1-3-5 rapid-response
// circles. It sits after the rules: it reads the alerts (citywatch.alerts)
// and the patrol units' reports (patrol.position and patrol.status, as
// ingest validated them on the internal events topic), and writes dispatch
// orders and every change of their state to citywatch.dispatches (keyed
// by unit id), and its own alerts (dispatch.sla_breach,
// dispatch.coverage_gap, and escalation updates) to citywatch.alerts.
//
// # What it promises
//
//   - Units: a live Registry of every unit's last trusted position, speed,
//     own status and current dispatch. Positions older than StaleAfter are
//     never ranked; a report from the future or implying an impossible
//     speed is flagged (citywatch_dispatch_unit_reports_flagged_total, a
//     log line) and not trusted.
//   - Ranking: available fresh units by estimated travel time (Model:
//     great-circle distance × road factor ÷ speed, by area: urban core,
//     town, rural), found through a grid index searched ring by ring until
//     the best are certain (Registry.Rank; no allocation).
//   - Assignment: a firing alert gets the fastest unit (critical 3, high
//     2 by default); a unit not accepting within AcceptTimeout is
//     reassigned, a decline sends the next at once; no unit is sent twice
//     to one alert. If no unit can be on scene by the alert's event time
//     plus its tier, the alert is escalated at once (escalated message and
//     the alert re-published as updated with dispatch_escalated).
//   - Lifecycle and SLA: the units' answers move a dispatch forward only;
//     no unit on scene by event time + tier raises dispatch.sla_breach and
//     a breached message.
//   - Coverage: every circle's coverage at every tick (Registry.Coverage),
//     a gauge by tier, and dispatch.coverage_gap for a tier-1 circle
//     uncovered for CoverageGapAfter, resolved when coverage returns.
//
// The logic (Engine) takes time as an argument; the Role's ticker is the
// only reader of the clock. The ETA model, ranking and coverage are
// exported so that a web process can compute the same from the topics.
//
// # Delivery
//
// A batch of alerts is committed only after the messages it caused are
// acknowledged (kafkaio.Consumer). Messages caused by the clock or by a
// unit's answer are written at once. All writes go through one queue in
// the order the engine decided them.
//
// # Restart
//
// The state is rebuilt from Kafka on every start, before the alerts group
// joins, from the dispatcher's own output rather than a checkpoint:
//
//  1. citywatch.alerts is read back over Lookback (1 h, by raised_at): the
//     place, severity, tier and event time of every alert, and which of
//     them are resolved, breached or open coverage gaps.
//  2. citywatch.dispatches is read back over Lookback (by time): every
//     dispatch is rebuilt in its last state, with its unit taken and its
//     assignment time, so an acceptance timer that was running fires at
//     the same instant as it would have (the reassigned message carries
//     assignment + timeout as its time), units already asked are never
//     asked again, and an escalation or breach already written is not
//     written twice.
//  3. The internal events topic is read over PositionsReplay (2 min, by
//     device time): the units' last positions, and any answer that was
//     not recorded before the stop is recorded now.
//
// The group then consumes alerts from its committed offset; an alert that
// already has dispatches is not dispatched again, so the replay of an
// uncommitted batch sends nobody twice. A dispatch whose alert is older
// than the lookback keeps its answers recorded but gets no new unit. The
// cost: a start reads one hour of alerts and dispatches and two minutes of
// events (a few seconds at city load).
//
// # Scale-out
//
// Each process reads every unit (the internal events topic, without a
// group, from the end offsets of step 3) and every dispatch
// (citywatch.dispatches, likewise), so a unit assigned by any dispatcher
// is unavailable to all. The alerts are split by district, in one of two
// ways:
//
//   - Config.ShareDistricts: the processes of Config.Group share the
//     city's districts through a consumer group on a coordination topic
//     with one partition per district (TopicDistricts). At every
//     generation of the group a process rebuilds, from the topics, the
//     state of the districts it was given (their open dispatches and
//     timers, as a start does) and reads the alerts without a committed
//     position, so a process that stops or joins moves districts without
//     losing a timer or sending a unit twice (runShared).
//   - Config.Districts: a fixed list per process, each process with its
//     own group on citywatch.alerts; a stopped process's districts wait
//     for its restart.
//
// Two processes may pick the same free unit within the few milliseconds
// before each reads the other's assignment; the unit's terminal then shows
// both and the later one times out into a reassignment.
package dispatch
