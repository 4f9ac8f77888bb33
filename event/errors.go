package event

import (
	"errors"
	"strconv"
)

// Code is a short, bounded reason for rejected input, safe as a metric label.
type Code string

// The reasons a message is rejected. The set is closed: every *Error that
// this package returns carries one of them.
const (
	// CodeMalformed is for a message that is not one JSON object, or has
	// invalid JSON (or invalid UTF-8, or a duplicate key) inside.
	CodeMalformed Code = "malformed_json"
	// CodeTooLarge is for a message longer than Decoder.MaxSize bytes.
	CodeTooLarge Code = "too_large"
	// CodeMissing is for a required field that is absent or null.
	CodeMissing Code = "missing_field"
	// CodeWrongType is for a field of the wrong JSON type, or a number that
	// must be an integer and is not.
	CodeWrongType Code = "wrong_type"
	// CodeOutOfRange is for a value outside its range, length bounds or
	// enumeration.
	CodeOutOfRange Code = "out_of_range"
	// CodeBadFormat is for a string that is not in its required format: a
	// time that is not RFC 3339 with offset, a buyer_id that is not 17
	// digits and a check character.
	CodeBadFormat Code = "bad_format"
	// CodeFuture is for a time too far ahead of the receiver's clock.
	CodeFuture Code = "future_time"
	// CodeCheckDigit is for a buyer_id whose check character is wrong.
	CodeCheckDigit Code = "bad_check_digit"
	// CodeUnknownType is for a type that is not one of the known types.
	CodeUnknownType Code = "unknown_type"
	// CodePersonalField is for buyer_id or buyer_name (in any case) where
	// they must not be: in a message of another type, among unknown fields
	// or in the normalised form; and for an unmasked buyer_id_masked.
	CodePersonalField Code = "misplaced_personal_data"
)

// Error describes why a message was rejected. It never holds the value of
// a personal field (buyer_id, buyer_name); other values are quoted at most
// 32 characters long.
type Error struct {
	Code   Code
	Field  string // the offending field, or "" for the message as a whole
	Reason string
}

// Error returns a one-line description such as `missing field "lat"` or
// `invalid buyer_id: wrong check digit`.
func (e *Error) Error() string {
	switch e.Code {
	case CodeMalformed:
		if e.Reason == "" {
			return "malformed JSON"
		}
		return "malformed JSON " + e.Reason
	case CodeTooLarge:
		return "message too large: " + e.Reason
	case CodeMissing:
		return "missing field " + strconv.Quote(e.Field)
	}
	if e.Field == "" {
		return "invalid message: " + e.Reason
	}
	return "invalid " + e.Field + ": " + e.Reason
}

// CodeOf returns the Code of the *Error in err's chain, "" for a nil err,
// and CodeMalformed for any other error.
func CodeOf(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeMalformed
}

// maxQuoted is how many characters of a value an error message may quote.
const maxQuoted = 32

// quoteValue quotes s for an error message, cut to maxQuoted characters,
// with anything shaped like an ID number masked first.
func quoteValue(s string) string {
	s = string(redactIDRuns([]byte(s)))
	n := 0
	for i := range s {
		if n == maxQuoted {
			return strconv.Quote(s[:i]) + "…"
		}
		n++
	}
	return strconv.Quote(s)
}

func malformedAt(pos int, reason string) error {
	return &Error{Code: CodeMalformed, Reason: "at byte " + strconv.Itoa(pos) + ": " + reason}
}

func missingField(field string) error {
	return &Error{Code: CodeMissing, Field: field, Reason: "required"}
}

func wrongType(field, want string, got valKind) error {
	return &Error{Code: CodeWrongType, Field: field, Reason: "want " + want + ", got " + got.String()}
}

func outOfRange(field, reason string) error {
	return &Error{Code: CodeOutOfRange, Field: field, Reason: reason}
}
