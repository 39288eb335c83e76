package reliable

// WatchedReceipts returns how many receipts s holds for settlement.
func WatchedReceipts(s *Server) int {
	s.receipts.mu.Lock()
	defer s.receipts.mu.Unlock()
	return len(s.receipts.m)
}

// SplitAddress is splitAddress, for the fuzz test of Address.
var SplitAddress = splitAddress
