package rules

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"citywatch/event"
)

// ReloaderConfig names the files a Reloader watches. An empty path means
// the embedded default (the default rule pack, the sample hotlist, the
// sample watchlist).
type ReloaderConfig struct {
	RulesPath     string `yaml:"rules"`     // CITYWATCH_CONFIG rules file
	HotlistPath   string `yaml:"hotlist"`   // CITYWATCH_HOTLIST
	WatchlistPath string `yaml:"watchlist"` // CITYWATCH_WATCHLIST
	// Interval is how often the files are checked for changes; default 5s.
	Interval time.Duration `yaml:"reload_interval"`
}

// SetDefaults fills zero fields with their defaults.
func (c *ReloaderConfig) SetDefaults() {
	if c.Interval == 0 {
		c.Interval = 5 * time.Second
	}
}

// Validate reports the first field that is not usable.
func (c *ReloaderConfig) Validate() error {
	if c.Interval <= 0 {
		return fmt.Errorf("rules.reload_interval: must be positive, got %s", c.Interval)
	}
	return nil
}

// Reloader loads the rule file and the lists, and reloads them when a file
// changes or the process receives SIGHUP. A new rule set that does not
// load (a syntax error, an unknown field, a bad hotlist line) is reported
// (log, citywatch_rules_last_reload_successful 0, LastError) and the rules
// already running stay.
type Reloader struct {
	cfg   ReloaderConfig
	pseud *event.Pseudonymizer
	apply func(*RuleSet)
	m     *Metrics
	log   *slog.Logger

	// hup wakes Run for a reload; SIGHUP is forwarded to it. Capacity 1:
	// a reload already asked for absorbs more asks.
	hup chan struct{}

	mu      sync.Mutex
	lastErr error
	sum     [32]byte // of the contents last loaded
}

// NewReloader returns a Reloader of cfg's files; apply receives every rule
// set loaded (Engine.Offer, or a func offering it to several engines). p
// turns the watchlist's ID numbers into pseudonyms. m and log may be nil.
func NewReloader(cfg ReloaderConfig, p *event.Pseudonymizer, apply func(*RuleSet), m *Metrics, log *slog.Logger) (*Reloader, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if p == nil {
		return nil, fmt.Errorf("cannot make rule reloader: %w", ErrNoPseudonymizer)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reloader{cfg: cfg, pseud: p, apply: apply, m: m, log: log, hup: make(chan struct{}, 1)}, nil
}

// LastError returns the error of the last load, or nil when it succeeded.
func (r *Reloader) LastError() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastErr
}

// Reload asks Run to reload now, as SIGHUP does. It does not wait.
func (r *Reloader) Reload() {
	select {
	case r.hup <- struct{}{}:
	default:
	}
}

// Load reads and compiles the files once and returns the rule set without
// applying it; the first load of a process uses it to fail fast.
func (r *Reloader) Load() (*RuleSet, error) {
	rs, _, err := r.load()
	return rs, err
}

func (r *Reloader) read(path string, def []byte) ([]byte, error) {
	if path == "" {
		return def, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", path, err)
	}
	return b, nil
}

// load reads the three files and compiles them, returning the hash of their
// contents.
func (r *Reloader) load() (*RuleSet, [32]byte, error) {
	var sum [32]byte
	rules, err := r.read(r.cfg.RulesPath, defaultRules)
	if err != nil {
		return nil, sum, err
	}
	hot, err := r.read(r.cfg.HotlistPath, defaultHotlist)
	if err != nil {
		return nil, sum, err
	}
	watch, err := r.read(r.cfg.WatchlistPath, defaultWatchlist)
	if err != nil {
		return nil, sum, err
	}
	h := sha256.New()
	for _, b := range [][]byte{rules, hot, watch} {
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
	}
	copy(sum[:], h.Sum(nil))
	hl, err := LoadHotlist(bytes.NewReader(hot))
	if err != nil {
		return nil, sum, err
	}
	wl, err := LoadWatchlist(bytes.NewReader(watch), r.pseud)
	if err != nil {
		return nil, sum, err
	}
	rs, err := Load(rules, Lists{Hotlist: hl, Watchlist: wl})
	return rs, sum, err
}

// Run loads the files, applies the rule set, then reloads whenever a file
// changes (checked every Interval) or SIGHUP arrives, until ctx is done. A
// first load that fails is returned as an error; later failures keep the
// running rules. Run owns no goroutine: it returns when ctx is done.
func (r *Reloader) Run(ctx context.Context) error {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP)
	defer signal.Stop(sig)

	if err := r.reload(true); err != nil {
		return err
	}
	tick := time.NewTicker(r.cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sig:
			r.log.Info("reloading rules on SIGHUP")
			_ = r.reload(false)
		case <-r.hup:
			_ = r.reload(false)
		case <-tick.C:
			_ = r.reload(false)
		}
	}
}

// errUnchanged is what reload reports when the files did not change.
var errUnchanged = errors.New("unchanged")

// reload loads the files and applies them when their contents changed.
func (r *Reloader) reload(first bool) error {
	rs, sum, err := r.load()
	r.mu.Lock()
	if err == nil && sum == r.sum && !first {
		r.mu.Unlock()
		return errUnchanged
	}
	// A broken file is reported once per change, not on every check.
	if err != nil && sum == r.sum && r.lastErr != nil && !first {
		r.mu.Unlock()
		return err
	}
	r.sum = sum
	r.lastErr = err
	r.mu.Unlock()
	r.m.reloaded(err)
	if err != nil {
		if first {
			return fmt.Errorf("cannot load rules: %w", err)
		}
		r.log.Error("rules not reloaded; the running rules stay", "err", err)
		return err
	}
	r.log.Info("rules loaded", "rules", len(rs.rules), "hotlist", rs.lists.Hotlist.Len(), "watchlist", rs.lists.Watchlist.Len())
	if r.apply != nil {
		r.apply(rs)
	}
	return nil
}
