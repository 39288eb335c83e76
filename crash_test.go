package wsreliable_test

// crashChild runs the test binary as a child process when the environment
// asks for it and reports whether it did (TestMain then returns).
func crashChild() bool { return false }
