// Package deploy holds no code: it is the home of the deployment files
// (deploy/compose, deploy/kubernetes, deploy/prometheus, deploy/grafana)
// and of deploy_test.go, which checks them against the code they deploy:
// metric names, environment variables, subcommands, roles, flags, ports,
// topic names and the scale-out settings.
package deploy
