package agent

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// TestResolveUser resolves users in a sandbox's account files: names,
// numbers, groups, and refuses unknown names.
func TestResolveUser(t *testing.T) {
	etc := t.TempDir()
	passwd := "root:x:0:0:root:/root:/bin/sh\n# comment\nuser:x:1000:1000:u:/home/user:/bin/sh\nbad:x:zz:1:b:/:/bin/sh\nshort:x\n"
	group := "root:x:0:\nuser:x:1000:\ndev:x:50:other,user\nwheel:x:10:user\nstaff:x:20:other\n"
	for name, content := range map[string]string{"passwd": passwd, "group": group} {
		if err := os.WriteFile(filepath.Join(etc, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		spec string
		want credential
	}{
		{"user", credential{uid: 1000, gid: 1000, groups: []uint32{1000, 50, 10}, name: "user", home: "/home/user"}},
		{"1000", credential{uid: 1000, gid: 1000, groups: []uint32{1000, 50, 10}, name: "user", home: "/home/user"}},
		{"root", credential{uid: 0, gid: 0, groups: []uint32{0}, name: "root", home: "/root"}},
		{"1234", credential{uid: 1234, gid: 1234, groups: []uint32{1234}, home: "/"}},
		{"1234:55", credential{uid: 1234, gid: 55, groups: []uint32{55}, home: "/"}},
		{"user:staff", credential{uid: 1000, gid: 20, groups: []uint32{20}, name: "user", home: "/home/user"}},
	}
	for _, tc := range cases {
		got, err := resolveUser(etc, tc.spec)
		if err != nil || !reflect.DeepEqual(*got, tc.want) {
			t.Errorf("%q: %+v %v, want %+v", tc.spec, got, err, tc.want)
		}
	}
	for _, bad := range []string{"nobody", "user:nogroup", ":", "user:", ":1", "bad", "4294967295", "short"} {
		if c, err := resolveUser(etc, bad); !errors.Is(err, errInvalid) {
			t.Errorf("%q: %+v %v, want errInvalid", bad, c, err)
		}
	}
	// Without account files only numbers resolve.
	if _, err := resolveUser(t.TempDir(), "user"); !errors.Is(err, errInvalid) {
		t.Errorf("no passwd: %v", err)
	}
	if c, err := resolveUser(t.TempDir(), "7:8"); err != nil || c.uid != 7 || c.gid != 8 {
		t.Errorf("no passwd, 7:8: %+v %v", c, err)
	}
}
