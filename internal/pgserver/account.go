package pgserver

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// serverUser is the OS account the server runs as when the caller is root:
// initdb and postgres refuse to run as root.
const serverUser = "postgres"

// account is the OS identity the server processes run as. A nil *account
// means "the current user": no credential switch and no chown.
type account struct {
	name     string
	uid, gid uint32
}

// serverAccount returns the account to run the server as: nil when the
// current user is not root, the postgres user otherwise.
func serverAccount() (*account, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(serverUser)
	if err != nil {
		return nil, fmt.Errorf("running as root, PostgreSQL must run as the OS user %q, which was not found (%v): "+
			"install PostgreSQL (Debian/Ubuntu: apt-get install -y postgresql creates it) or run as a non-root user",
			serverUser, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("OS user %q has a non-numeric uid %q", serverUser, u.Uid)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("OS user %q has a non-numeric gid %q", serverUser, u.Gid)
	}
	return &account{name: serverUser, uid: uint32(uid), gid: uint32(gid)}, nil
}

// sysProcAttr returns the process attributes for a server-side command: its
// own process group (a Ctrl-C meant for the parent must not shut the server
// down behind the parent's back) and, when running as root, the postgres
// credential. Supplementary groups are dropped.
func (a *account) sysProcAttr() *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Setpgid: true}
	if a != nil {
		attr.Credential = &syscall.Credential{Uid: a.uid, Gid: a.gid}
	}
	return attr
}

// chown gives path to the account; a no-op for the current user.
func (a *account) chown(path string) error {
	if a == nil {
		return nil
	}
	return os.Chown(path, int(a.uid), int(a.gid))
}

// prepareDir makes sure dir exists. Missing parents are created with mode
// 0755, dir itself with perm. When running as root, dir is given to the
// postgres user if Start created it, or if claimEmpty is set and it is empty
// (an empty directory about to become a data directory). Existing directories
// are otherwise left alone.
func (a *account) prepareDir(dir string, perm fs.FileMode, claimEmpty bool) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return err
		}
		if err := os.Mkdir(dir, perm); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		if err := os.Chmod(dir, perm); err != nil { // undo the umask
			return err
		}
		return a.chown(dir)
	case err != nil:
		return err
	case !fi.IsDir():
		return fmt.Errorf("%s exists and is not a directory", dir)
	}
	if a == nil || !claimEmpty || ownedBy(fi, a) {
		return nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		return nil // initdb or postgres will say what is wrong with it
	}
	if err := os.Chmod(dir, perm); err != nil {
		return err
	}
	return a.chown(dir)
}

// checkReachable verifies, when running as root, that the postgres user can
// reach dir: every ancestor must be searchable by it, and dir itself must be
// searchable and, if writable is set, writable. Without this check a data
// directory under /root fails later with an obscure "permission denied".
func (a *account) checkReachable(dir string, writable bool) error {
	if a == nil {
		return nil
	}
	for p := dir; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		want := fs.FileMode(0o1) // search
		if p == dir && writable {
			want |= 0o2
		}
		if !a.may(fi, want) {
			return fmt.Errorf("%s is not accessible to the OS user %s, which runs PostgreSQL "+
				"(mode %v, owner uid %d): choose a directory it can reach, e.g. under /tmp or /var/lib",
				p, a.name, fi.Mode().Perm(), ownerUID(fi))
		}
		if parent := filepath.Dir(p); parent == p {
			return nil
		}
	}
}

// may reports whether the account has the permission bits want (a
// combination of 4=read, 2=write, 1=search) on fi, using its owner, group and
// other bits the way the kernel does for a process without supplementary
// groups.
func (a *account) may(fi fs.FileInfo, want fs.FileMode) bool {
	perm := fi.Mode().Perm()
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return true // cannot tell; let the server report
	}
	switch {
	case st.Uid == a.uid:
		return (perm>>6)&want == want
	case st.Gid == a.gid:
		return (perm>>3)&want == want
	default:
		return perm&want == want
	}
}

func ownedBy(fi fs.FileInfo, a *account) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Uid == a.uid
}

func ownerUID(fi fs.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int64(st.Uid)
	}
	return -1
}
