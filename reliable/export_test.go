package reliable

import (
	"time"

	"github.com/wsreliable/wsreliable/protocol"
)

// WatchedReceipts returns how many receipts s holds for settlement.
func WatchedReceipts(s *Server) int {
	s.receipts.mu.Lock()
	defer s.receipts.mu.Unlock()
	return len(s.receipts.m)
}

// ConnHeartbeat returns the heartbeat interval and timeout c uses on a
// connection whose welcome announced interval and timeout.
func ConnHeartbeat(c *Client, interval, timeout time.Duration) (time.Duration, time.Duration) {
	hb := c.heartbeat(&protocol.Welcome{HeartbeatInterval: interval, HeartbeatTimeout: timeout})
	return hb.interval, hb.timeout
}

// SplitAddress is splitAddress, for the fuzz test of Address.
var SplitAddress = splitAddress
