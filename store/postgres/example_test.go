package postgres_test

import (
	"context"
	"log"
	"net/http"

	"github.com/jackc/pgx/v5"

	"github.com/wsreliable/wsreliable/reliable"
	"github.com/wsreliable/wsreliable/store/postgres"
)

// A fleet node: the server's state in PostgreSQL (every node of the
// fleet points at the same database, here through both hosts of a
// primary and its synchronous standby), and a handler whose writes
// commit with the watermark advance, so no message is applied twice.
// Compile-only: it needs a database.
func ExampleStore_Handler() {
	ctx := context.Background()
	st, err := postgres.Open(ctx, "postgres://wsr@db1:5432,db2:5432/wsr?target_session_attrs=read-write", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	handler := st.Handler(func(ctx context.Context, tx pgx.Tx, m *reliable.Message) error {
		_, err := tx.Exec(ctx, `INSERT INTO readings (device, body) VALUES ($1, $2)`, m.ClientID, m.Payload)
		return err
	})
	srv, err := reliable.NewServer("", handler, &reliable.ServerOptions{Store: st})
	if err != nil {
		log.Fatal(err)
	}
	http.Handle("/ws", srv)
	log.Fatal(http.ListenAndServe(":8080", nil))
}
