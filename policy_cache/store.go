package policycache

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
)

// Errors returned by [Store].
var (
	// ErrNotFound is returned by [Store.Get] when no live entry exists for
	// the key: it was never stored, was deleted, has expired, or was
	// found damaged earlier and removed.
	ErrNotFound = errors.New("policycache: store entry not found")

	// ErrCorrupt is wrapped by the error [Store.Get] returns, and by the
	// error passed to [StoreOptions.OnCorrupt], when an entry file is
	// damaged: truncated, too large, of the wrong format, for a different
	// key, or failing its checksum. The damaged file has been deleted by
	// the time the error is returned.
	ErrCorrupt = errors.New("policycache: corrupt store entry")

	// ErrInvalidKey is returned for an empty key or one longer than
	// [MaxKeySize] bytes.
	ErrInvalidKey = errors.New("policycache: invalid store key")

	// ErrValueTooLarge is returned by [Store.Put] for a value longer than
	// [MaxValueSize] bytes.
	ErrValueTooLarge = errors.New("policycache: store value too large")
)

// Size limits of the persistent store.
const (
	// MaxKeySize is the longest key, in bytes, a [Store] accepts.
	MaxKeySize = 1024
	// MaxValueSize is the largest value, in bytes, a [Store] accepts.
	// RFC 8461 §3.3 suggests 64 KiB as the largest MTA-STS policy.
	MaxValueSize = 1 << 20
)

// On-disk format, version 1. All integers are big-endian.
//
//	offset  size  field
//	0       4     magic "PCST"
//	4       2     format version (1)
//	6       8     expiry, seconds since the Unix epoch (signed)
//	14      4     expiry, nanoseconds within the second (< 1e9)
//	18      2     key length K (1..MaxKeySize)
//	20      K     key bytes
//	20+K    4     payload length N (0..MaxValueSize)
//	24+K    4     CRC-32C (Castagnoli) of every byte of the file except
//	              these four
//	28+K    N     payload
//
// The file must be exactly 28+K+N bytes long.
const (
	storeMagic    = "PCST"
	storeVersion  = 1
	fixedSize     = 28
	maxFileSize   = fixedSize + MaxKeySize + MaxValueSize
	entrySuffix   = ".pcs"
	tempPrefix    = ".tmp-"
	entryNameSize = 2*sha256.Size + len(entrySuffix)
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// StoreOptions configures a [Store]. The zero value is usable.
type StoreOptions struct {
	// Now returns the current time; entries whose expiry is not after Now
	// are treated as absent. Defaults to time.Now.
	Now func() time.Time

	// OnCorrupt, if set, is called once for each damaged entry file the
	// store finds (and deletes). key is the key being looked up, or, when
	// the damage was found by Keys or Prune, the key recorded in the file
	// if it could be read, otherwise "". err wraps ErrCorrupt and names
	// the file and the problem. It is called without the store's lock
	// held, so it may use the store.
	OnCorrupt func(key string, err error)
}

// Store is a small persistent key/value store with per-entry expiry, meant
// for data that must survive a restart, such as MTA-STS policies (RFC 8461
// §5.1 asks senders to keep policies for their max_age).
//
// Each entry is one file in the store's directory, named after the SHA-256
// of the key, so untrusted keys (any bytes) can never escape the directory.
// Writes are atomic and durable (temporary file, fsync, rename, fsync of
// the directory). Damaged files are detected with a checksum and deleted,
// never returned.
//
// A Store is safe for concurrent use by multiple goroutines. A directory
// must be owned by a single process (and a single Store) at a time: there
// is no cross-process locking.
type Store struct {
	dir       string
	now       func() time.Time
	onCorrupt func(key string, err error)

	mu sync.Mutex
}

// corruption is a pending OnCorrupt notification, delivered after the
// store's lock is released.
type corruption struct {
	key string
	err error
}

// OpenStore opens the store kept in dir, creating dir with mode 0700 if it
// does not exist. Temporary files left behind by a write interrupted by a
// crash are removed.
func OpenStore(dir string, opts StoreOptions) (*Store, error) {
	if dir == "" {
		return nil, errors.New("policycache: store directory not set")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("policycache: creating store directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("policycache: opening store: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("policycache: store path %s is not a directory", dir)
	}
	s := &Store{dir: dir, now: opts.Now, onCorrupt: opts.OnCorrupt}
	if s.now == nil {
		s.now = time.Now
	}
	if err := s.removeTemps(); err != nil {
		return nil, err
	}
	return s, nil
}

// removeTemps deletes leftovers of interrupted writes.
func (s *Store) removeTemps() error {
	names, err := s.readDirNames()
	if err != nil {
		return err
	}
	removed := false
	for _, name := range names {
		if !strings.HasPrefix(name, tempPrefix) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(s.dir, name)); err != nil {
			return fmt.Errorf("policycache: removing leftover temporary file: %w", err)
		}
		removed = true
	}
	if removed {
		return s.syncDir()
	}
	return nil
}

// Get returns the value stored for key and its expiry. It returns an error
// matching ErrNotFound if there is no entry or it has expired (Now is at or
// after its expiry): an expired MTA-STS policy must not be applied (RFC
// 8461 §3.3). It returns an error wrapping ErrCorrupt if the entry file is
// damaged, in which case the file is deleted and OnCorrupt is called.
// Other errors are I/O failures; the entry is then left alone.
func (s *Store) Get(key string) (value []byte, expires time.Time, err error) {
	if err := checkKey(key); err != nil {
		return nil, time.Time{}, err
	}
	var bad []corruption
	defer func() { s.report(bad) }()

	s.mu.Lock()
	defer s.mu.Unlock()
	path := s.pathFor(key)
	data, err := readEntryFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, time.Time{}, ErrNotFound
	}
	if err == nil {
		var fileKey string
		fileKey, value, expires, err = decodeEntry(data)
		if err == nil && fileKey != key {
			err = corruptf("entry is for a different key")
		}
	}
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			return nil, time.Time{}, fmt.Errorf("policycache: reading store entry: %w", err)
		}
		err = s.discard(path, err)
		bad = append(bad, corruption{key, err})
		return nil, time.Time{}, err
	}
	if !s.now().Before(expires) {
		return nil, time.Time{}, ErrNotFound
	}
	return value, expires, nil
}

// Put stores value under key until expires, replacing any previous entry.
// The write is atomic: after a crash the previous entry or the new one is
// found, never a mixture. An entry whose expiry is not after Now is written
// but is invisible to Get and removed by the next Prune.
func (s *Store) Put(key string, value []byte, expires time.Time) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if len(value) > MaxValueSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrValueTooLarge, len(value), MaxValueSize)
	}
	data := encodeEntry(key, value, expires)

	var bad []corruption
	defer func() { s.report(bad) }()
	s.mu.Lock()
	defer s.mu.Unlock()
	path := s.pathFor(key)

	tmp, err := os.CreateTemp(s.dir, tempPrefix+"*")
	if err != nil {
		return fmt.Errorf("policycache: writing store entry: %w", err)
	}
	tmpName := tmp.Name()
	committed := false
	defer func() {
		if !committed {
			os.Remove(tmpName)
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("policycache: writing store entry: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("policycache: writing store entry: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("policycache: writing store entry: %w", err)
	}
	if err := os.Rename(tmpName, path); err != nil {
		// Renaming over a directory fails; something that is not ours
		// occupies the entry's name. Clear it and try once more.
		fi, statErr := os.Lstat(path)
		if statErr != nil || !fi.IsDir() {
			return fmt.Errorf("policycache: writing store entry: %w", err)
		}
		cerr := s.discard(path, corruptf("entry path is a directory"))
		bad = append(bad, corruption{key, cerr})
		if err := os.Rename(tmpName, path); err != nil {
			return fmt.Errorf("policycache: writing store entry: %w", err)
		}
	}
	committed = true
	if err := s.syncDir(); err != nil {
		return fmt.Errorf("policycache: writing store entry: %w", err)
	}
	return nil
}

// Delete removes the entry for key. Deleting a key that has no entry is
// not an error.
func (s *Store) Delete(key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	path := s.pathFor(key)
	err := os.Remove(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		// A non-empty directory in the entry's place: not ours, remove.
		if fi, statErr := os.Lstat(path); statErr == nil && fi.IsDir() {
			err = os.RemoveAll(path)
		}
		if err != nil {
			return fmt.Errorf("policycache: deleting store entry: %w", err)
		}
	}
	if err := s.syncDir(); err != nil {
		return fmt.Errorf("policycache: deleting store entry: %w", err)
	}
	return nil
}

// Keys returns, sorted, the keys of all entries that have not expired.
// Every entry file is read and verified; damaged ones are deleted and
// reported through OnCorrupt. Files in the directory that do not follow
// the store's naming scheme are ignored.
func (s *Store) Keys() ([]string, error) {
	var keys []string
	now := s.now()
	_, err := s.scan(func(key string, expires time.Time) bool {
		if now.Before(expires) {
			keys = append(keys, key)
		}
		return false
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(keys)
	return keys, nil
}

// Prune deletes every entry that has expired per Now, and every damaged
// entry file (reported through OnCorrupt). removed counts both.
func (s *Store) Prune() (removed int, err error) {
	now := s.now()
	return s.scan(func(_ string, expires time.Time) bool {
		return !now.Before(expires)
	})
}

// scan reads every entry file under the lock and calls visit for each
// valid one; if visit returns true the entry is deleted. Damaged files are
// always deleted. It returns the number of files deleted.
func (s *Store) scan(visit func(key string, expires time.Time) (remove bool)) (int, error) {
	var bad []corruption
	defer func() { s.report(bad) }()

	s.mu.Lock()
	defer s.mu.Unlock()
	names, err := s.readDirNames()
	if err != nil {
		return 0, err
	}
	removed := 0
	for _, name := range names {
		if !isEntryName(name) {
			continue
		}
		path := filepath.Join(s.dir, name)
		data, err := readEntryFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		var key string
		var expires time.Time
		if err == nil {
			key, _, expires, err = decodeEntry(data)
			if err == nil && entryName(key) != name {
				err = corruptf("entry is stored under the wrong file name")
			}
		}
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				return removed, fmt.Errorf("policycache: reading store entry: %w", err)
			}
			err = s.discard(path, err)
			bad = append(bad, corruption{key, err})
			removed++
			continue
		}
		if visit(key, expires) {
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return removed, fmt.Errorf("policycache: deleting store entry: %w", err)
			}
			removed++
		}
	}
	if removed > 0 {
		if err := s.syncDir(); err != nil {
			return removed, err
		}
	}
	return removed, nil
}

// report delivers OnCorrupt notifications; called with the lock released.
func (s *Store) report(bad []corruption) {
	if s.onCorrupt == nil {
		return
	}
	for _, c := range bad {
		s.onCorrupt(c.key, c.err)
	}
}

// discard deletes a damaged entry file (or whatever occupies its name) and
// returns cause annotated with the file name and any failure to delete.
func (s *Store) discard(path string, cause error) error {
	err := fmt.Errorf("%s: %w", filepath.Base(path), cause)
	rmErr := os.Remove(path)
	if rmErr != nil && !errors.Is(rmErr, fs.ErrNotExist) {
		if fi, statErr := os.Lstat(path); statErr == nil && fi.IsDir() {
			rmErr = os.RemoveAll(path)
		}
	}
	if rmErr == nil {
		rmErr = s.syncDir()
	}
	if rmErr != nil && !errors.Is(rmErr, fs.ErrNotExist) {
		return fmt.Errorf("%w (deleting it failed: %v)", err, rmErr)
	}
	return err
}

func (s *Store) pathFor(key string) string {
	return filepath.Join(s.dir, entryName(key))
}

func (s *Store) readDirNames() ([]string, error) {
	d, err := os.Open(s.dir)
	if err != nil {
		return nil, fmt.Errorf("policycache: reading store directory: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("policycache: reading store directory: %w", err)
	}
	return names, nil
}

// syncDir makes renames and removals in the directory durable.
func (s *Store) syncDir() error {
	if runtime.GOOS == "windows" {
		return nil // directories cannot be fsynced there
	}
	d, err := os.Open(s.dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// entryName is the file name of key's entry: the hex SHA-256 of the key.
// The key itself is stored inside the file and checked on every read.
func entryName(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:]) + entrySuffix
}

func isEntryName(name string) bool {
	if len(name) != entryNameSize || !strings.HasSuffix(name, entrySuffix) {
		return false
	}
	for _, c := range name[:2*sha256.Size] {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func checkKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: empty", ErrInvalidKey)
	}
	if len(key) > MaxKeySize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrInvalidKey, len(key), MaxKeySize)
	}
	return nil
}

// readEntryFile reads a whole entry file. Anything that is not a regular
// file of plausible size is reported as corrupt; a missing file as
// fs.ErrNotExist; other failures are returned unchanged.
func readEntryFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, corruptf("not a regular file (%s)", fi.Mode().Type())
	}
	if fi.Size() > maxFileSize {
		return nil, corruptf("file is %d bytes, limit %d", fi.Size(), maxFileSize)
	}
	// The size may change under us; never read more than the limit.
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFileSize {
		return nil, corruptf("file exceeds %d bytes", maxFileSize)
	}
	return data, nil
}

func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// encodeEntry serialises an entry in format version 1. The caller has
// checked the key and value sizes.
func encodeEntry(key string, value []byte, expires time.Time) []byte {
	b := make([]byte, 0, fixedSize+len(key)+len(value))
	b = append(b, storeMagic...)
	b = binary.BigEndian.AppendUint16(b, storeVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(expires.Unix()))
	b = binary.BigEndian.AppendUint32(b, uint32(expires.Nanosecond()))
	b = binary.BigEndian.AppendUint16(b, uint16(len(key)))
	b = append(b, key...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(value)))
	crcOff := len(b)
	b = append(b, 0, 0, 0, 0)
	b = append(b, value...)
	binary.BigEndian.PutUint32(b[crcOff:], entryChecksum(b, crcOff))
	return b
}

// entryChecksum is the CRC-32C of b without the four bytes at crcOff.
func entryChecksum(b []byte, crcOff int) uint32 {
	sum := crc32.Update(0, castagnoli, b[:crcOff])
	return crc32.Update(sum, castagnoli, b[crcOff+4:])
}

// decodeEntry parses and verifies an entry file. Every error wraps
// ErrCorrupt. The returned value aliases data.
func decodeEntry(data []byte) (key string, value []byte, expires time.Time, err error) {
	if len(data) < fixedSize {
		return "", nil, time.Time{}, corruptf("truncated: %d bytes", len(data))
	}
	if !bytes.Equal(data[:4], []byte(storeMagic)) {
		return "", nil, time.Time{}, corruptf("bad magic %q", data[:4])
	}
	if v := binary.BigEndian.Uint16(data[4:6]); v != storeVersion {
		return "", nil, time.Time{}, corruptf("unsupported format version %d", v)
	}
	sec := int64(binary.BigEndian.Uint64(data[6:14]))
	nsec := binary.BigEndian.Uint32(data[14:18])
	if nsec >= 1e9 {
		return "", nil, time.Time{}, corruptf("bad expiry nanoseconds %d", nsec)
	}
	keyLen := int(binary.BigEndian.Uint16(data[18:20]))
	if keyLen == 0 || keyLen > MaxKeySize {
		return "", nil, time.Time{}, corruptf("bad key length %d", keyLen)
	}
	if len(data) < fixedSize+keyLen {
		return "", nil, time.Time{}, corruptf("truncated: %d bytes", len(data))
	}
	off := 20 + keyLen
	valLen := int(binary.BigEndian.Uint32(data[off : off+4]))
	if valLen > MaxValueSize {
		return "", nil, time.Time{}, corruptf("bad payload length %d", valLen)
	}
	if want := fixedSize + keyLen + valLen; len(data) != want {
		return "", nil, time.Time{}, corruptf("file is %d bytes, header says %d", len(data), want)
	}
	crcOff := off + 4
	if got, want := entryChecksum(data, crcOff), binary.BigEndian.Uint32(data[crcOff:]); got != want {
		return "", nil, time.Time{}, corruptf("checksum mismatch")
	}
	key = string(data[20:off])
	value = data[crcOff+4:]
	return key, value, time.Unix(sec, int64(nsec)), nil
}
