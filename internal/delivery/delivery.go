// Package delivery takes a message the SMTP server has accepted and puts it
// where Route said it goes (SPEC §4, §8): into the Maildir of every local
// mailbox, and into the durable outbound queue for every address outside the
// managed domains (forwards produced by aliases included). It also sends the
// delivery status notifications the queue produces, by the same two paths.
//
// # Durability
//
// Accept returns nil only when every copy is on stable storage: each Maildir
// file is fsynced and renamed into new/ with its directory fsynced (package
// maildir), and the queue entry is fsynced (package queue). Only then may the
// server answer 250. Local copies are written first; when one fails, Accept
// fails (the client is told 451 and retries) before anything was queued, so
// a retry can duplicate a local copy but never lose one, and never sends a
// remote copy twice because of a local problem.
package delivery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/mailgate/mailgate/internal/address"
	"github.com/mailgate/mailgate/internal/directory"
	"github.com/mailgate/mailgate/internal/maildir"
	"github.com/mailgate/mailgate/internal/policy"
	"github.com/mailgate/mailgate/internal/queue"
)

// Envelope is the SMTP envelope of an accepted message.
type Envelope struct {
	From     string // canonical reverse-path; "" is the null sender
	SMTPUTF8 bool   // the message needs SMTPUTF8 (RFC 6531)
	BodyType string // RFC 6152 BODY= value, "" if not given
}

// Recipient is one accepted RCPT TO with the Route answer it got.
type Recipient struct {
	Original string // the recipient as given (canonical form), for X-Original-To
	Route    policy.RouteResult
}

// Agent delivers accepted messages.
type Agent struct {
	Mail   *maildir.Store
	Queue  *queue.Queue
	Logger *slog.Logger
	// Snapshot returns the directory in force (for DSN routing).
	Snapshot func() *directory.Snapshot
}

// ErrTemporary wraps every Accept failure: nothing it returns is permanent.
var ErrTemporary = errors.New("temporary delivery failure")

// Outcome describes where an accepted message went, for the log.
type Outcome struct {
	Local   []string // paths of the Maildir files
	QueueID string   // "" when nothing was queued
	Remote  int      // recipients queued
}

// Accept stores msg (the complete message, CRLF line endings) for every
// destination of rcpts. See the package comment for the order of the writes.
func (a *Agent) Accept(env Envelope, rcpts []Recipient, msg []byte) (Outcome, error) {
	var out Outcome
	var targets []maildir.Target
	var remote []string
	seenBox := map[address.Address]bool{}
	seenRemote := map[string]bool{}
	for _, r := range rcpts {
		switch r.Route.Status {
		case policy.Remote:
			if !seenRemote[r.Original] {
				seenRemote[r.Original] = true
				remote = append(remote, r.Original)
			}
		case policy.Deliver:
			for _, d := range r.Route.Destinations {
				switch d.Kind {
				case policy.Mailbox:
					box, err := address.Parse(d.Mailbox, address.Options{UTF8Local: true})
					if err != nil {
						return out, fmt.Errorf("%w: mailbox %q of %s: %v", ErrTemporary, d.Mailbox, r.Original, err)
					}
					// One copy per mailbox, with the first recipient that led
					// there as X-Original-To (Postfix's duplicate elimination).
					if !seenBox[box] {
						seenBox[box] = true
						targets = append(targets, maildir.Target{Mailbox: box, OriginalTo: r.Original})
					}
				case policy.Forward:
					if !seenRemote[d.Address] {
						seenRemote[d.Address] = true
						remote = append(remote, d.Address)
					}
				}
			}
		default:
			return out, fmt.Errorf("%w: recipient %s has route status %s", ErrTemporary, r.Original, r.Route.Status)
		}
	}
	if len(targets) > 0 {
		results := a.Mail.DeliverAll(env.From, targets, bytes.NewReader(msg), int64(len(msg)))
		var errs []error
		for _, res := range results {
			if res.Err != nil {
				errs = append(errs, res.Err)
				continue
			}
			out.Local = append(out.Local, res.Path)
		}
		if len(errs) > 0 {
			return out, fmt.Errorf("%w: local delivery: %w", ErrTemporary, errors.Join(errs...))
		}
	}
	if len(remote) > 0 {
		id, err := a.Queue.Enqueue(queue.Envelope{
			From:     env.From,
			To:       remote,
			SMTPUTF8: env.SMTPUTF8,
			BodyType: env.BodyType,
		}, bytes.NewReader(msg))
		if err != nil {
			return out, fmt.Errorf("%w: queueing: %w", ErrTemporary, err)
		}
		out.QueueID, out.Remote = id, len(remote)
	}
	return out, nil
}

// Bounce implements queue.Bouncer: the DSN goes to the original sender
// through Route, from the null sender (RFC 5321 §4.5.5), into a local Maildir
// or back into the queue. A DSN for an address that Route cannot deliver is
// logged and dropped: reporting it would be a bounce of a bounce.
func (a *Agent) Bounce(ctx context.Context, dsn *queue.DSN) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	snap := a.Snapshot()
	res := policy.Route(snap, dsn.To)
	switch res.Status {
	case policy.Deliver, policy.Remote:
		out, err := a.Accept(Envelope{From: "", SMTPUTF8: needsUTF8(dsn.To)},
			[]Recipient{{Original: res.Recipient, Route: res}}, dsn.Message)
		if err != nil {
			return err
		}
		a.logger().Info("bounce sent", "to", dsn.To, "of", dsn.QueueID, "local", len(out.Local), "queued", out.QueueID)
		return nil
	case policy.TempFail:
		return fmt.Errorf("%w: routing the bounce to %s: %s", ErrTemporary, dsn.To, res.Reply)
	default:
		a.logger().Warn("bounce dropped: the sender address cannot receive mail", "to", dsn.To, "of", dsn.QueueID, "status", res.Status)
		return nil
	}
}

func (a *Agent) logger() *slog.Logger {
	if a.Logger != nil {
		return a.Logger
	}
	return slog.Default()
}

func needsUTF8(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return true
		}
	}
	return false
}
