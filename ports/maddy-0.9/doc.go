// Package daneguard is the daneguard glue for maddy 0.9 (built and tested
// against maddy v0.9.4): the same `mx_auth { dane { ... } }` policy as the
// maddy 0.8 build at the repository root, with the same directives,
// verdicts, log lines and metrics. It is a separate Go module so that the
// repository root can stay on maddy v0.8.2, the newest maddy the Go module
// proxy serves to this project's CI.
//
// maddy 0.9 changed the module API the glue is written against: factories
// live in framework/module/modules and receive a *container.C, modules are
// configured with Configure(inlineArgs, cfg) instead of Init(cfg), long-lived
// work belongs in Start and Stop (container.LifetimeModule) instead of
// io.Closer and shutdown hooks, mx_auth policies implement StartDelivery
// instead of Start, and loggers are *log.Logger sub-loggers of the
// container's. module.go is the module (parsing with internal/service's
// directive table, life cycle, verdict adapter), integration.go the
// registry work and the start-up self-check. Everything else (DANE,
// MTA-STS, the policy cache, TLS-RPT, the decision) is the root module's
// maddy-free code, linked through the replace directive in go.mod.
//
// docs/integration.md lists, file by file, the maddy 0.8.2 and 0.9.4 APIs
// the glue touches and what it does about each difference.
package daneguard
