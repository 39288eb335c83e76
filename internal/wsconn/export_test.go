package wsconn

// WriterLinger is writerLinger, for tests.
const WriterLinger = writerLinger
