package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/wsreliable/wsreliable/queue"
)

// schemaVersion is the version of the schema this package writes; a
// database at a higher version was migrated by a newer release.
const schemaVersion = 1

// migrationLock is the pg_advisory_xact_lock key that serializes schema
// migrations of nodes starting at once ("wsr_schema" in ASCII, truncated
// to 8 bytes).
const migrationLock int64 = 0x7773725f73636865

// migrations[i] takes the schema from version i to i+1. Every table
// keys strings as bytea: client IDs and identities are arbitrary bytes
// compared bytewise, as the queue package orders them.
var migrations = []string{
	`
CREATE TABLE wsr_owners (
	peer       bytea PRIMARY KEY,
	owner      text NOT NULL,
	epoch      bigint NOT NULL,
	claimed_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE wsr_watermarks (
	peer   bytea NOT NULL,
	stream bytea NOT NULL,
	seq    bigint NOT NULL,
	PRIMARY KEY (peer, stream)
);
CREATE TABLE wsr_bindings (
	peer     bytea PRIMARY KEY,
	identity bytea NOT NULL
);
CREATE TABLE wsr_peers (
	peer      bytea PRIMARY KEY,
	last_used bigint NOT NULL
);
CREATE TABLE wsr_outboxes (
	client   bytea PRIMARY KEY,
	stream   bytea NOT NULL,
	last_seq bigint NOT NULL DEFAULT 0,
	acked    bigint NOT NULL DEFAULT 0,
	messages bigint NOT NULL DEFAULT 0,
	bytes    bigint NOT NULL DEFAULT 0
);
CREATE TABLE wsr_entries (
	client  bytea NOT NULL,
	seq     bigint NOT NULL,
	id      bytea NOT NULL,
	headers bytea,
	payload bytea NOT NULL,
	expires bigint NOT NULL,
	size    bigint NOT NULL,
	queued  bigint NOT NULL,
	PRIMARY KEY (client, seq)
);
CREATE TABLE wsr_settled (
	id       bytea PRIMARY KEY,
	client   bytea NOT NULL,
	seq      bigint NOT NULL,
	pending  boolean NOT NULL,
	code     integer NOT NULL,
	reason   bytea NOT NULL,
	at       bigint NOT NULL,
	reported boolean NOT NULL
);
CREATE INDEX wsr_settled_unreported ON wsr_settled (at, id) WHERE NOT pending AND NOT reported;
CREATE INDEX wsr_settled_reported ON wsr_settled (at) WHERE reported;
`,
}

// migrate creates or upgrades the schema in one transaction, holding an
// advisory lock so that nodes starting together migrate one at a time
// (the others then find the work done).
func migrate(ctx context.Context, conn interface {
	Begin(context.Context) (pgx.Tx, error)
}) error {
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLock); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS wsr_schema (version integer NOT NULL)`); err != nil {
			return err
		}
		version, found := 0, true
		err := tx.QueryRow(ctx, `SELECT version FROM wsr_schema`).Scan(&version)
		if errors.Is(err, pgx.ErrNoRows) {
			found, err = false, nil
		}
		if err != nil {
			return err
		}
		if version > schemaVersion {
			return fmt.Errorf("%w: database schema version %d, this program knows up to %d", queue.ErrVersion, version, schemaVersion)
		}
		for v := version; v < schemaVersion; v++ {
			if _, err := tx.Exec(ctx, migrations[v]); err != nil {
				return fmt.Errorf("migrating the schema to version %d: %w", v+1, err)
			}
		}
		if !found {
			_, err = tx.Exec(ctx, `INSERT INTO wsr_schema (version) VALUES ($1)`, schemaVersion)
		} else if version != schemaVersion {
			_, err = tx.Exec(ctx, `UPDATE wsr_schema SET version = $1`, schemaVersion)
		}
		return err
	})
}
