package wire

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"connectrpc.com/connect"
)

// TestErrorTableMatchesDocs: docs/remote.md's error table lists every
// sentinel's reason with the code and HTTP status the server answers, in
// the order that chooses the code.
func TestErrorTableMatchesDocs(t *testing.T) {
	doc, err := os.ReadFile("../../../docs/remote.md")
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		code   string
		status int
	}
	rows := map[string]row{}
	var order []string
	for _, line := range strings.Split(string(doc), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) != 6 || !strings.HasPrefix(strings.TrimSpace(cells[2]), "`") {
			continue
		}
		reason := strings.Trim(strings.TrimSpace(cells[2]), "`")
		status, _ := strconv.Atoi(strings.TrimSpace(cells[4]))
		rows[reason] = row{strings.Trim(strings.TrimSpace(cells[3]), "`"), status}
		order = append(order, reason)
	}
	var want []string
	for _, s := range Sentinels {
		reason := strings.TrimPrefix(s.Reason.String(), "ERROR_REASON_")
		want = append(want, reason)
		got, ok := rows[reason]
		if !ok {
			t.Errorf("docs/remote.md has no row for %s", reason)
			continue
		}
		if got.code != s.Code.String() || got.status != HTTPStatus(s.Code) {
			t.Errorf("docs/remote.md: %s is %s %d, the server answers %s %d", reason, got.code, got.status, s.Code, HTTPStatus(s.Code))
		}
	}
	if strings.Join(order, " ") != strings.Join(want, " ") {
		t.Errorf("docs/remote.md rows in order %v, precedence is %v", order, want)
	}
	for _, c := range []connect.Code{connect.CodeUnauthenticated, connect.CodeDeadlineExceeded, connect.CodeCanceled} {
		if !strings.Contains(string(doc), "| `"+c.String()+"` | "+strconv.Itoa(HTTPStatus(c))+" |") {
			t.Errorf("docs/remote.md lacks the row of %s", c)
		}
	}
}
