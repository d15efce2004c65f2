package hostsconf

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

// Configure writes <ConfigPath>/<registry>/hosts.toml for every registry in
// opts.Registries. A file already holding the wanted content is left as is; a
// file that is not berth's is first copied to hosts.toml.berth-backup (once: a
// later run finds the backup and does not make another). Every write is atomic
// (temporary file, fsync, rename), so containerd never reads half a file.
// On error the Result lists what was done before it.
func Configure(opts Options) (Result, error) {
	var res Result
	o, err := opts.withDefaults()
	if err != nil {
		return res, err
	}
	if len(o.Registries) == 0 {
		return res, fmt.Errorf("%w: no registries to configure", ErrInvalidOptions)
	}
	names := make([]string, 0, len(o.Registries))
	for name := range o.Registries {
		if err := checkName(name); err != nil {
			return res, err
		}
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		server, err := checkURL(o.Registries[name])
		if err != nil {
			return res, fmt.Errorf("%w: upstream URL %q for %s: %v", ErrInvalidOptions, o.Registries[name], name, err)
		}
		want := Render(name, server, o.MirrorURL, o.DialTimeout)
		if err := configureOne(&res, o.ConfigPath, name, want); err != nil {
			return res, err
		}
	}
	return res, nil
}

func configureOne(res *Result, root, name string, want []byte) error {
	dir := filepath.Join(root, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("hostsconf: %w", err)
	}
	if err := writeOwned(res, filepath.Join(dir, FileName), want); err != nil {
		return err
	}
	shadowWarning(res, root, name)
	return nil
}

// backup copies a foreign file's content beside it unless the same backup is
// already there. It reports whether it made one.
func backup(path string, cur []byte, mode fs.FileMode) (bool, error) {
	bpath := path + BackupSuffix
	old, _, err := readFile(bpath)
	if err != nil {
		return false, err
	}
	if old != nil {
		if bytes.Equal(old, cur) {
			return false, nil
		}
		return false, fmt.Errorf("%w: %s differs from %s, which is not berth's; move one of them away", ErrBackupExists, bpath, path)
	}
	return true, writeAtomic(bpath, cur, mode)
}

// shadowWarning notes a "host_port_" directory that containerd reads before ours.
func shadowWarning(res *Result, root, name string) {
	alt := hostDirectory(name)
	if alt == name {
		return
	}
	p := filepath.Join(root, alt, FileName)
	if b, _, err := readFile(p); err == nil && b != nil && !IsBerthFile(b) {
		res.Warnings = append(res.Warnings, fmt.Sprintf("%s is read by containerd before %s: berth's file has no effect until it is moved away", p, filepath.Join(root, name, FileName)))
	}
}

// Undo takes berth out of containerd's path for every registry directory under
// opts.ConfigPath (opts.Registries is not consulted, so registries dropped from
// the configuration since Configure are cleaned too): a berth file with a backup
// beside it is replaced by the backup, one without is removed together with its
// directory if that leaves it empty, and files that are not berth's are left
// alone. A missing ConfigPath is not an error.
func Undo(opts Options) (Result, error) {
	var res Result
	root := opts.ConfigPath
	if root == "" {
		root = DefaultConfigPath
	}
	entries, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("hostsconf: %w", err)
	}
	for _, e := range entries { // ReadDir sorts by name
		if !e.IsDir() {
			continue
		}
		if err := undoOne(&res, filepath.Join(root, e.Name())); err != nil {
			return res, err
		}
	}
	return res, nil
}

func undoOne(res *Result, dir string) error {
	path := filepath.Join(dir, FileName)
	bpath := path + BackupSuffix
	cur, _, err := readFile(path)
	if err != nil {
		return err
	}
	bak, _, err := readFile(bpath)
	if err != nil {
		return err
	}
	ours := cur != nil && IsBerthFile(cur)
	switch {
	case bak != nil && (ours || cur == nil):
		if err := os.Rename(bpath, path); err != nil {
			return fmt.Errorf("hostsconf: restoring %s: %w", path, err)
		}
		syncDir(dir)
		res.Restored = append(res.Restored, path)
	case ours:
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("hostsconf: %w", err)
		}
		syncDir(dir)
		res.Removed = append(res.Removed, path)
		_ = os.Remove(dir) // only succeeds when empty; a non-empty dir is not ours to remove
	case bak != nil:
		res.Warnings = append(res.Warnings, fmt.Sprintf("%s is not berth's and was left alone; %s kept", path, bpath))
	}
	return nil
}

// IsBerthFile reports whether a hosts.toml's content was written by berth.
func IsBerthFile(b []byte) bool {
	return bytes.HasPrefix(b, []byte(Marker))
}

// readFile returns nil content and no error when the file does not exist.
func readFile(path string) ([]byte, fs.FileMode, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("hostsconf: %w", err)
	}
	if b == nil {
		b = []byte{}
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, 0, fmt.Errorf("hostsconf: %w", err)
	}
	return b, fi.Mode().Perm(), nil
}

// writeAtomic writes data to a temporary file in path's directory, syncs it and
// renames it over path.
func writeAtomic(path string, data []byte, perm fs.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("hostsconf: %w", err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
			err = fmt.Errorf("hostsconf: writing %s: %w", path, err)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	syncDir(dir)
	return nil
}

// syncDir makes a rename or removal durable; best effort, as some filesystems
// cannot sync a directory.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}
