// Package pgtest starts throwaway PostgreSQL servers for tests: a
// primary in a test's temporary directory, optionally a synchronous
// streaming standby, with functions to kill the primary and promote the
// standby. Everything it starts is stopped by the test's cleanup.
//
// The PostgreSQL binaries (initdb, postgres, pg_basebackup) are found on
// PATH or in /usr/lib/postgresql/*/bin. When they are missing the test
// is skipped with a loud reason, or fails when the environment variable
// CI is "true". Run as root, the servers run as the user named by
// WSRELIABLE_PG_USER, else as "nobody" (PostgreSQL refuses to run as
// root).
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wsreliable/wsreliable/internal/fixedport"
)

// startTimeout bounds each server start, initdb and base backup.
const startTimeout = 60 * time.Second

// Cluster is a primary and, after [Cluster.StartStandby], a synchronous
// standby. Its methods are for the test goroutine (they call t.Fatal).
type Cluster struct {
	t    testing.TB
	bin  string
	cred *syscall.Credential // nil: run as ourselves
	dir  string
	// Primary is the server taking writes: the one Start made, or the
	// standby once promoted.
	Primary *Server
	// Standby is the synchronous standby; nil until StartStandby and
	// after Promote.
	Standby *Server
	schemas int // made by NewSchema
}

// Server is one PostgreSQL server process group.
type Server struct {
	name string
	dir  string // data directory
	sock string // unix socket directory
	port *fixedport.Port
	cmd  *exec.Cmd
	done chan struct{} // closed when the postmaster has exited
}

// PID returns the process ID of the server's postmaster (its process
// group's ID too).
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Port returns the server's TCP port on 127.0.0.1.
func (s *Server) Port() int {
	_, p, _ := strings.Cut(s.port.Addr(), ":")
	n, _ := strconv.Atoi(p)
	return n
}

// DSN returns a URL for the server's postgres database as user
// postgres (trust authentication on 127.0.0.1).
func (s *Server) DSN() string {
	return fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable&connect_timeout=5", s.port.Addr())
}

// Start initializes and starts a primary for t (fsync on, listening on
// 127.0.0.1 on a port outside the ephemeral range, its unix socket in
// the temporary directory) and registers its shutdown with t.Cleanup.
func Start(t testing.TB) *Cluster {
	t.Helper()
	bin, err := findBin()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("pgtest: PostgreSQL binaries not found (CI=true, so this fails): %v", err)
		}
		t.Skipf("pgtest: SKIPPING: PostgreSQL binaries not found (install postgresql, or put initdb and postgres on PATH): %v", err)
	}
	c := &Cluster{t: t, bin: bin, dir: t.TempDir()}
	if os.Geteuid() == 0 {
		c.cred, err = credential()
		if err != nil {
			t.Fatalf("pgtest: running as root and no user to run PostgreSQL as: %v", err)
		}
		// The temporary directories are 0700 root: let the server's
		// user through to its own subdirectories.
		for d := c.dir; d != filepath.Dir(d) && strings.HasPrefix(d, os.TempDir()) && d != os.TempDir(); d = filepath.Dir(d) {
			if err := os.Chmod(d, 0o711); err != nil {
				t.Fatalf("pgtest: %v", err)
			}
		}
	}
	s := c.newServer("primary")
	c.initdb(s.dir)
	c.start(s)
	c.Primary = s
	return c
}

// initdb makes a fresh data directory at dir: a copy of a template
// cluster, made by initdb once per user and PostgreSQL binary directory and kept
// in the system's temporary directory (initdb takes seconds on a loaded
// machine, a copy a fraction of that).
func (c *Cluster) initdb(dir string) {
	c.t.Helper()
	uid := os.Geteuid()
	if c.cred != nil {
		uid = int(c.cred.Uid)
	}
	tmpl := filepath.Join(os.TempDir(), fmt.Sprintf("wsreliable-pgtest-%d%s", uid, strings.ReplaceAll(c.bin, "/", "_")))
	if _, err := os.Stat(filepath.Join(tmpl, "PG_VERSION")); err != nil {
		// Build it aside and rename it into place: concurrent test
		// processes each build one, the first rename wins.
		work, err := os.MkdirTemp(os.TempDir(), "wsreliable-pgtest-build-")
		if err != nil {
			c.t.Fatalf("pgtest: %v", err)
		}
		defer os.RemoveAll(work)
		if err := os.Chmod(work, 0o755); err != nil {
			c.t.Fatalf("pgtest: %v", err)
		}
		c.chown(work)
		data := filepath.Join(work, "data")
		start := time.Now()
		c.run(filepath.Join(c.bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
			"--no-sync", "--no-instructions")
		c.t.Logf("pgtest: initdb of the template cluster %s took %v", tmpl, time.Since(start).Round(time.Millisecond))
		_ = os.Rename(data, tmpl)
	}
	c.run("cp", "-a", tmpl, dir)
}

// findBin returns the directory holding initdb and postgres.
func findBin() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		// A symlink on PATH (/usr/local/bin/initdb) names the directory
		// holding the other programs.
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Sort(sort.Reverse(sort.StringSlice(dirs))) // newest version first
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("no initdb on PATH or in /usr/lib/postgresql/*/bin")
}

// credential is the user PostgreSQL runs as when we are root.
func credential() (*syscall.Credential, error) {
	name := os.Getenv("WSRELIABLE_PG_USER")
	if name == "" {
		name = "nobody"
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, err
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, err
	}
	if uid == 0 {
		return nil, fmt.Errorf("user %s is root", name)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

// newServer makes the directories of a server and reserves its port.
func (c *Cluster) newServer(name string) *Server {
	c.t.Helper()
	s := &Server{name: name, dir: filepath.Join(c.dir, name), sock: filepath.Join(c.dir, name+"-sock")}
	for _, d := range []string{s.sock} {
		if err := os.Mkdir(d, 0o700); err != nil {
			c.t.Fatalf("pgtest: %v", err)
		}
		c.chown(d)
	}
	if c.cred != nil {
		// initdb and pg_basebackup create the data directory; its
		// parent must be writable by the server's user.
		c.chown(c.dir)
	}
	p, err := fixedport.Reserve()
	if err != nil {
		c.t.Fatalf("pgtest: %v", err)
	}
	s.port = p
	c.t.Cleanup(func() { _ = p.Close() })
	return s
}

func (c *Cluster) chown(path string) {
	if c.cred == nil {
		return
	}
	if err := os.Chown(path, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
		c.t.Fatalf("pgtest: %v", err)
	}
}

// command prepares a PostgreSQL program to run as the server's user, in
// its own process group, killed if the test process dies.
func (c *Cluster) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "TZ=UTC")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// run runs a program to completion, failing the test with its output.
func (c *Cluster) run(name string, args ...string) {
	c.t.Helper()
	cmd := c.command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("pgtest: %s: %v", filepath.Base(name), err)
	}
	t := time.AfterFunc(startTimeout, func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	defer t.Stop()
	if err := cmd.Wait(); err != nil {
		c.t.Fatalf("pgtest: %s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out.String())
	}
}

// start runs s's postmaster and waits until it accepts connections.
func (c *Cluster) start(s *Server, extra ...string) {
	c.t.Helper()
	args := []string{
		"-D", s.dir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "port=" + strconv.Itoa(s.Port()),
		"-c", "unix_socket_directories=" + s.sock,
		"-c", "fsync=on",
		"-c", "synchronous_commit=on",
		"-c", "full_page_writes=on",
		"-c", "max_connections=100",
		"-c", "shared_buffers=32MB",
		"-c", "wal_level=replica",
		"-c", "max_wal_senders=4",
		"-c", "wal_keep_size=64MB",
		"-c", "wal_retrieve_retry_interval=100ms", // a standby notices a promotion at once
		"-c", "logging_collector=off",
		"-c", "log_min_messages=warning",
	}
	args = append(args, extra...)
	s.cmd = c.command(filepath.Join(c.bin, "postgres"), args...)
	logf, err := os.Create(filepath.Join(c.dir, s.name+".log"))
	if err != nil {
		c.t.Fatalf("pgtest: %v", err)
	}
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		_ = logf.Close()
		c.t.Fatalf("pgtest: postgres: %v", err)
	}
	s.done = make(chan struct{})
	go func() {
		_ = s.cmd.Wait()
		_ = logf.Close()
		close(s.done)
	}()
	c.t.Cleanup(func() { s.stop() })
	if err := waitReady(s, startTimeout); err != nil {
		log, _ := os.ReadFile(filepath.Join(c.dir, s.name+".log"))
		c.t.Fatalf("pgtest: %s did not start: %v\n%s", s.name, err, log)
	}
}

// waitReady polls until s accepts a query or its process ends.
func waitReady(s *Server, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, s.DSN())
		if err == nil {
			err = conn.Ping(ctx)
			_ = conn.Close(ctx)
		}
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-s.done:
			return errors.New("postgres exited")
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return err
		}
	}
}

// stop shuts s down fast (SIGINT), then kills its process group if it
// lingers, and waits for the postmaster. Idempotent.
func (s *Server) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.done:
	default:
		_ = s.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
		}
	}
	// Whatever is left of the group (backends of a killed postmaster).
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.done
}

// Kill SIGKILLs the primary's whole process group (postmaster and
// backends at once, as a machine dying would) and waits for the
// postmaster to be gone.
func (c *Cluster) Kill() {
	c.t.Helper()
	s := c.Primary
	if err := syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		c.t.Fatalf("pgtest: kill primary: %v", err)
	}
	<-s.done
}

// StartStandby takes a base backup of the primary, starts it as a
// streaming standby, and makes it synchronous (synchronous_standby_names
// on the primary, synchronous_commit=on): it returns once the primary
// reports the standby as sync, so every commit acknowledged from then
// on is flushed on both.
func (c *Cluster) StartStandby() *Server {
	c.t.Helper()
	p := c.Primary
	s := c.newServer("standby")
	c.run(filepath.Join(c.bin, "pg_basebackup"), "-D", s.dir, "-R", "-X", "stream", "-c", "fast",
		"-h", "127.0.0.1", "-p", strconv.Itoa(p.Port()), "-U", "postgres", "--no-sync")
	c.start(s, "-c", fmt.Sprintf("primary_conninfo=host=127.0.0.1 port=%d user=postgres application_name=wsr_standby", p.Port()))
	c.Standby = s
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.DSN())
	if err != nil {
		c.t.Fatalf("pgtest: %v", err)
	}
	defer conn.Close(ctx)
	for _, q := range []string{`ALTER SYSTEM SET synchronous_standby_names = 'wsr_standby'`, `SELECT pg_reload_conf()`} {
		if _, err := conn.Exec(ctx, q); err != nil {
			c.t.Fatalf("pgtest: %s: %v", q, err)
		}
	}
	for {
		var state string
		err := conn.QueryRow(ctx, `SELECT sync_state FROM pg_stat_replication WHERE application_name = 'wsr_standby'`).Scan(&state)
		if err == nil && state == "sync" {
			return s
		}
		if ctx.Err() != nil {
			c.t.Fatalf("pgtest: standby not synchronous: %q, %v", state, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Promote promotes the standby and returns once it accepts writes. The
// promoted server is then Primary; Standby is nil.
func (c *Cluster) Promote() {
	c.t.Helper()
	s := c.Standby
	if s == nil {
		c.t.Fatal("pgtest: Promote without a standby")
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.DSN())
	if err != nil {
		c.t.Fatalf("pgtest: promote: %v", err)
	}
	defer conn.Close(ctx)
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_promote(true, 60)`).Scan(&ok); err != nil || !ok {
		c.t.Fatalf("pgtest: pg_promote = %v, %v", ok, err)
	}
	c.Primary, c.Standby = s, nil
}

// NewSchema creates an empty schema in the primary's database and
// returns a DSN whose connections use it (search_path), so that tests
// can share one cluster without sharing tables.
func (c *Cluster) NewSchema(t testing.TB) string {
	t.Helper()
	c.schemas++
	name := fmt.Sprintf("t%d", c.schemas)
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.Primary.DSN())
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return c.Primary.DSN() + "&search_path=" + name
}

// DSN returns the primary's DSN.
func (c *Cluster) DSN() string { return c.Primary.DSN() }

// MultiHostDSN returns a DSN naming the primary and the standby (in that
// order) with target_session_attrs=read-write: a client connects to
// whichever accepts writes, so it follows a promotion.
func (c *Cluster) MultiHostDSN() string {
	hosts := []string{c.Primary.port.Addr()}
	if c.Standby != nil {
		hosts = append(hosts, c.Standby.port.Addr())
	}
	q := url.Values{"sslmode": {"disable"}, "connect_timeout": {"2"}, "target_session_attrs": {"read-write"}}
	return fmt.Sprintf("postgres://postgres@%s/postgres?%s", strings.Join(hosts, ","), q.Encode())
}
