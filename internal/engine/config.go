package engine

// Config returns the configuration the engine was built with, so that a
// tool (the operator's checker) can build a second engine with the same
// policies and a few settings changed.
func (e *Engine) Config() Config { return e.cfg }
