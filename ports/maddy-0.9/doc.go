// Package daneguard is the daneguard glue for maddy 0.9 (built and tested
// against maddy v0.9.4). It is a separate Go module so that the repository
// root can stay on maddy v0.8.2, the newest maddy the Go module proxy
// serves to this project's CI.
//
// maddy 0.9 changed the module API the glue is written against: factories
// live in framework/module/modules and receive a *container.C, modules are
// configured with Configure(inlineArgs, cfg) instead of Init(cfg), long-lived
// work belongs in Start and Stop (container.LifetimeModule) instead of
// io.Closer and shutdown hooks, mx_auth policies implement StartDelivery
// instead of Start, and loggers are *log.Logger sub-loggers of the
// container's. The DANE, MTA-STS, policy cache and TLS-RPT logic does not
// depend on maddy and is shared with the maddy 0.8 build: it is imported
// from the root module (see the replace directive in go.mod).
//
// docs/integration-0.9.md lists, file by file, the maddy 0.8.2 and 0.9.4
// APIs the glue touches and what the glue does about each difference.
package daneguard
