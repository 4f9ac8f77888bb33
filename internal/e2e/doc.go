// Package e2e holds citywatch's end-to-end tests: the roles wired together
// against an in-process Kafka-protocol broker and the real ClickHouse
// server, fed by the simulators, with failures injected (crashes between
// insert and commit, database outages) to check that nothing is lost and
// nothing is counted twice. It has no non-test code.
package e2e
