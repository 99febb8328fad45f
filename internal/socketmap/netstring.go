package socketmap

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
)

var (
	// errEOF: the client closed the connection between two requests.
	errEOF = errors.New("end of connection")
	// errMalformed wraps every netstring syntax error.
	errMalformed = errors.New("malformed netstring")
)

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errMalformed, fmt.Sprintf(format, args...))
}

// readNetstring reads one netstring (D. J. Bernstein, "Netstrings",
// 1997: "<decimal length>:<payload>,") of at most max payload octets.
// The length is strict decimal: at least one digit, no sign, no
// white space, no leading zero (except "0" itself). It returns errEOF when
// the reader is at its end before the first octet, an error wrapping
// errMalformed for a syntax error, a length over max or a truncated
// netstring, and other I/O errors (timeouts) as they are.
func readNetstring(br *bufio.Reader, max int) ([]byte, error) {
	maxDigits := len(strconv.Itoa(max))
	n, digits := 0, 0
	for {
		b, err := br.ReadByte()
		if err != nil {
			if err == io.EOF {
				if digits == 0 {
					return nil, errEOF
				}
				return nil, malformed("end of file in the length")
			}
			return nil, err
		}
		if b == ':' {
			if digits == 0 {
				return nil, malformed("empty length")
			}
			break
		}
		if b < '0' || b > '9' {
			return nil, malformed("unexpected %q in the length", b)
		}
		if digits == 1 && n == 0 {
			return nil, malformed("length with a leading zero")
		}
		digits++
		if digits > maxDigits {
			return nil, malformed("length longer than %d digits", maxDigits)
		}
		n = n*10 + int(b-'0')
	}
	if n > max {
		return nil, malformed("length %d over the limit of %d", n, max)
	}
	buf := make([]byte, n+1)
	if _, err := io.ReadFull(br, buf); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil, malformed("end of file inside a %d-octet payload", n)
		}
		return nil, err
	}
	if buf[n] != ',' {
		return nil, malformed("%q instead of ',' after %d octets", buf[n], n)
	}
	return buf[:n], nil
}

// writeNetstring writes s as a netstring.
func writeNetstring(w *bufio.Writer, s string) {
	w.WriteString(strconv.Itoa(len(s)))
	w.WriteByte(':')
	w.WriteString(s)
	w.WriteByte(',')
}
