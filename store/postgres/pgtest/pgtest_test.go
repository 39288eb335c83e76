package pgtest_test

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/wsreliable/wsreliable/store/postgres/pgtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestCleanup: a primary and a synchronous standby come up, the primary
// is killed and the standby promoted (it then takes writes), and once
// the test's cleanup ran no process of either server's group is left.
func TestCleanup(t *testing.T) {
	var groups []int
	t.Run("cluster", func(t *testing.T) {
		start := time.Now()
		c := pgtest.Start(t)
		t.Logf("primary up in %v", time.Since(start).Round(time.Millisecond))
		start = time.Now()
		c.StartStandby()
		t.Logf("synchronous standby up in %v", time.Since(start).Round(time.Millisecond))
		groups = append(groups, c.Primary.PID(), c.Standby.PID())
		c.Kill()
		start = time.Now()
		c.Promote()
		t.Logf("standby promoted in %v", time.Since(start).Round(time.Millisecond))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, c.MultiHostDSN())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `CREATE TABLE after_promotion (a int)`); err != nil {
			t.Fatalf("write to the promoted standby: %v", err)
		}
	})
	for _, pgid := range groups {
		if err := syscall.Kill(-pgid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process group %d still has processes after cleanup (kill 0: %v)", pgid, err)
		}
	}
}
