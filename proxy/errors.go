package proxy

import (
	"errors"
	"log/slog"

	"github.com/fetchq/fetchq-proxy/backend"
	"github.com/fetchq/fetchq-proxy/rewrite"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// This file is the one place where Go errors become ErrorResponse messages
// (https://www.postgresql.org/docs/current/protocol-error-fields.html).
//
//  1. A *pgconn.PgError from the upstream passes through with every field.
//  2. The proxy's own, the rewriter's and the backend's errors keep their
//     code, message, detail, hint (and position).
//  3. Another error that knows its SQLSTATE (interface{ SQLState() string })
//     keeps its code and message.
//  4. Anything else becomes XX000 with a generic message; the details go to
//     the log, never to the client (they may hold a DSN or internal SQL).

// sqlStater is implemented by errors that carry their own SQLSTATE.
type sqlStater interface {
	SQLState() string
}

// Error is an error the proxy raises itself, with the fields a client sees.
type Error struct {
	Severity string // ERROR or FATAL; empty means ERROR
	Code     string // SQLSTATE
	Message  string
	Detail   string
	Hint     string
}

func (e *Error) Error() string { return e.Message }

// SQLState returns the error's SQLSTATE code.
func (e *Error) SQLState() string { return e.Code }

// errorResponse translates err into the message sent to the client. fatal
// forces the FATAL severity for errors that end the connection.
func errorResponse(err error, fatal bool, logger *slog.Logger) *pgproto3.ErrorResponse {
	sev := "ERROR"
	if fatal {
		sev = "FATAL"
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		r := &pgproto3.ErrorResponse{
			Severity:            pgErr.Severity,
			SeverityUnlocalized: pgErr.SeverityUnlocalized,
			Code:                pgErr.Code,
			Message:             pgErr.Message,
			Detail:              pgErr.Detail,
			Hint:                pgErr.Hint,
			Position:            pgErr.Position,
			InternalPosition:    pgErr.InternalPosition,
			InternalQuery:       pgErr.InternalQuery,
			Where:               pgErr.Where,
			SchemaName:          pgErr.SchemaName,
			TableName:           pgErr.TableName,
			ColumnName:          pgErr.ColumnName,
			DataTypeName:        pgErr.DataTypeName,
			ConstraintName:      pgErr.ConstraintName,
			File:                pgErr.File,
			Line:                pgErr.Line,
			Routine:             pgErr.Routine,
		}
		if fatal {
			r.Severity, r.SeverityUnlocalized = sev, sev
		}
		return r
	}
	var rwErr *rewrite.Error
	if errors.As(err, &rwErr) {
		return &pgproto3.ErrorResponse{
			Severity: sev, SeverityUnlocalized: sev,
			Code: rwErr.Code, Message: rwErr.Message, Detail: rwErr.Detail, Hint: rwErr.Hint,
			Position: int32(rwErr.Position),
		}
	}
	var beErr *backend.Error
	if errors.As(err, &beErr) {
		return &pgproto3.ErrorResponse{
			Severity: sev, SeverityUnlocalized: sev,
			Code: beErr.Code, Message: beErr.Message, Detail: beErr.Detail, Hint: beErr.Hint,
		}
	}
	var own *Error
	if errors.As(err, &own) {
		if own.Severity != "" && !fatal {
			sev = own.Severity
		}
		return &pgproto3.ErrorResponse{
			Severity: sev, SeverityUnlocalized: sev,
			Code: own.Code, Message: own.Message, Detail: own.Detail, Hint: own.Hint,
		}
	}
	var st sqlStater
	if errors.As(err, &st) {
		return &pgproto3.ErrorResponse{
			Severity: sev, SeverityUnlocalized: sev,
			Code: st.SQLState(), Message: err.Error(),
		}
	}
	if logger != nil {
		logger.Error("internal error", "err", err)
	}
	return &pgproto3.ErrorResponse{
		Severity: sev, SeverityUnlocalized: sev,
		Code: "XX000", Message: "internal error in fetchq-proxy",
	}
}
