package pgstore

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// EventKind is the kind of an Event of Watch.
type EventKind int

const (
	// Changed: a change was committed; reload.
	Changed EventKind = iota + 1
	// Down: the server cannot be reached (Err says why); reported once.
	Down
	// Up: listening (again): changes may have been missed; reload.
	Up
)

func (k EventKind) String() string {
	switch k {
	case Changed:
		return "changed"
	case Down:
		return "down"
	case Up:
		return "up"
	}
	return "unknown"
}

// Event is what Watch reports.
type Event struct {
	Kind EventKind
	Err  error // for Down
}

// Timing of Watch.
const (
	waitSlice     = 300 * time.Millisecond // one wait for a notification
	pingIdle      = time.Second            // ping after this long without traffic
	pingTimeout   = time.Second            // a server that does not answer a ping within this is down
	retryInterval = 250 * time.Millisecond // between connection attempts while down
	coalesce      = 20 * time.Millisecond  // notifications this close are one Changed
	coalesceMax   = 200 * time.Millisecond // but a stream of them is reported at least this often
	watchConnect  = 2 * time.Second        // connect timeout of the listening connection
)

// Watch listens for directory changes on a dedicated connection until ctx
// is done, and reports them to ev (from Watch's goroutine, one at a time):
//
//   - Up once listening, first and after every reconnection: the caller
//     reloads, as changes may have been missed since its last Load;
//   - Changed for each committed change (a burst may be one event);
//   - Down, once, when the server is lost (the connection fails or a ping
//     goes unanswered); Watch then tries to reconnect every 250 ms.
func (s *Store) Watch(ctx context.Context, ev func(Event)) {
	down := false
	for ctx.Err() == nil {
		conn, err := s.listen(ctx)
		if err == nil {
			if down {
				s.log.Info("postgres directory reachable again", "database", s.dest)
			}
			down = false
			ev(Event{Kind: Up})
			err = s.wait(ctx, conn, ev)
			closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			conn.Close(closeCtx)
			cancel()
		}
		if ctx.Err() != nil {
			return
		}
		if !down {
			down = true
			s.log.Warn("postgres directory unreachable", "database", s.dest, "err", err)
			ev(Event{Kind: Down, Err: s.wrap(err, "listening for changes")})
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(retryInterval):
		}
	}
}

// listen opens the listening connection.
func (s *Store) listen(ctx context.Context) (*pgx.Conn, error) {
	cfg := s.cfg.ConnConfig.Copy()
	cfg.ConnectTimeout = min(cfg.ConnectTimeout, watchConnect)
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return conn, nil
}

// wait reports the notifications of conn until ctx is done (nil) or the
// connection fails (its error).
func (s *Store) wait(ctx context.Context, conn *pgx.Conn, ev func(Event)) error {
	idle := time.Now()
	for {
		wctx, cancel := context.WithTimeout(ctx, waitSlice)
		_, err := conn.WaitForNotification(wctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case err == nil:
			// Gather the notifications that follow closely.
			start := time.Now()
			var cerr error
			for time.Since(start) < coalesceMax {
				cctx, cancel := context.WithTimeout(ctx, coalesce)
				_, cerr = conn.WaitForNotification(cctx)
				cancel()
				if cerr != nil {
					break
				}
			}
			ev(Event{Kind: Changed})
			if cerr != nil && !isTimeout(cerr) && ctx.Err() == nil {
				return cerr
			}
			idle = time.Now()
		case isTimeout(err):
			if time.Since(idle) >= pingIdle {
				pctx, cancel := context.WithTimeout(ctx, pingTimeout)
				err := conn.Ping(pctx)
				cancel()
				if ctx.Err() != nil {
					return nil
				}
				if err != nil {
					return err
				}
				idle = time.Now()
			}
		default:
			return err
		}
	}
}

// isTimeout reports whether a wait ended by its own deadline.
func isTimeout(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err)
}
