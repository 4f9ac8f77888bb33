package web

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"
)

// Role is what a user may do.
type Role string

// The roles. Operators watch the feed and act on alerts; patrol users are
// bound to one unit and answer its dispatches; analysts read the trends;
// admins do everything an operator and analyst do, upload hotlists and
// request an identity unmasking.
const (
	RoleOperator Role = "operator"
	RolePatrol   Role = "patrol"
	RoleAnalyst  Role = "analyst"
	RoleAdmin    Role = "admin"
)

// Roles lists every role.
var Roles = []Role{RoleOperator, RolePatrol, RoleAnalyst, RoleAdmin}

func (r Role) valid() bool { return slices.Contains(Roles, r) }

// User is one account of the users file.
type User struct {
	Name string `yaml:"name" json:"name"`
	Role Role   `yaml:"role" json:"role"`
	// PasswordHash is a bcrypt hash ($2a$/$2b$/$2y$, cost ≥ 10), made for
	// example with `htpasswd -nbBC 12 NAME PASSWORD` (the part after the
	// colon).
	PasswordHash string `yaml:"password_hash" json:"-"`
	// Districts are the district names (襄城区) the user sees; empty
	// means the whole city.
	Districts []string `yaml:"districts" json:"districts"`
	// Unit is the patrol unit id a patrol user answers for.
	Unit string `yaml:"unit" json:"unit,omitempty"`
}

// sees reports whether the user's area includes district. An alert
// without a district is seen only by users of the whole city.
func (u *User) sees(district string) bool {
	return len(u.Districts) == 0 || slices.Contains(u.Districts, district)
}

// usersFile is the YAML form of the users file.
type usersFile struct {
	Users []User `yaml:"users"`
}

// minBcryptCost is the lowest cost accepted in the users file.
const minBcryptCost = 10

// LoadUsers reads a users file. Unknown fields, duplicate names, unknown
// roles, weak or malformed hashes and patrol users without a unit are
// errors naming the user.
func LoadUsers(path string) (map[string]*User, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read users file: %w", err)
	}
	var f usersFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("cannot parse users file %s: %w", path, err)
	}
	users := make(map[string]*User, len(f.Users))
	for i := range f.Users {
		u := &f.Users[i]
		switch {
		case u.Name == "":
			return nil, fmt.Errorf("users file %s: user %d: name is required", path, i+1)
		case users[u.Name] != nil:
			return nil, fmt.Errorf("users file %s: user %q: listed twice", path, u.Name)
		case !u.Role.valid():
			return nil, fmt.Errorf("users file %s: user %q: role %q is not operator, patrol, analyst or admin", path, u.Name, u.Role)
		case u.Role == RolePatrol && u.Unit == "":
			return nil, fmt.Errorf("users file %s: user %q: a patrol user needs a unit", path, u.Name)
		}
		cost, err := bcrypt.Cost([]byte(u.PasswordHash))
		if err != nil {
			return nil, fmt.Errorf("users file %s: user %q: password_hash: %w", path, u.Name, err)
		}
		if cost < minBcryptCost {
			return nil, fmt.Errorf("users file %s: user %q: password_hash: bcrypt cost %d is below %d", path, u.Name, cost, minBcryptCost)
		}
		users[u.Name] = u
	}
	return users, nil
}

// WriteUsers writes users to path (mode 0600) in the users-file form.
func WriteUsers(path string, users []User) error {
	data, err := yaml.Marshal(usersFile{Users: users})
	if err != nil {
		return fmt.Errorf("cannot encode users: %w", err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("cannot write users file: %w", err)
	}
	return nil
}

// HashPassword returns a bcrypt hash of password for a users file.
func HashPassword(password string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(password), 12)
	if err != nil {
		return "", fmt.Errorf("cannot hash password: %w", err)
	}
	return string(h), nil
}

// dummyHash is compared against when a login names no user, so that an
// unknown name costs as long as a wrong password.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("citywatch-no-such-user"), minBcryptCost)

// session is one login.
type session struct {
	token   string
	user    *User
	created time.Time
	expires time.Time
}

// sessions holds the logins, bounded by max: when full the oldest is
// dropped. Tokens are 32 random bytes; only their holder's cookie names
// them.
type sessions struct {
	mu   sync.Mutex
	max  int
	ttl  time.Duration
	byID map[string]*session
	// failures counts failed logins per name, for the lockout.
	failures map[string]*loginFailures
}

type loginFailures struct {
	n     int
	first time.Time
}

// Lockout: after maxLoginFailures failures within lockoutWindow a name
// is refused until the window has passed since its first failure.
const (
	maxLoginFailures = 5
	lockoutWindow    = 15 * time.Minute
	maxFailureNames  = 10000
)

func newSessions(max int, ttl time.Duration) *sessions {
	return &sessions{max: max, ttl: ttl, byID: map[string]*session{}, failures: map[string]*loginFailures{}}
}

var errLockedOut = errors.New("too many failed logins; try again later")
var errBadLogin = errors.New("wrong name or password")

// login checks name and password against users and opens a session.
func (ss *sessions) login(users map[string]*User, name, password string, now time.Time) (*session, error) {
	ss.mu.Lock()
	if f := ss.failures[name]; f != nil {
		if now.Sub(f.first) > lockoutWindow {
			delete(ss.failures, name)
		} else if f.n >= maxLoginFailures {
			ss.mu.Unlock()
			return nil, errLockedOut
		}
	}
	ss.mu.Unlock()

	u := users[name]
	hash := dummyHash
	if u != nil {
		hash = []byte(u.PasswordHash)
	}
	err := bcrypt.CompareHashAndPassword(hash, []byte(password))

	ss.mu.Lock()
	defer ss.mu.Unlock()
	if err != nil || u == nil {
		f := ss.failures[name]
		if f == nil {
			if len(ss.failures) >= maxFailureNames {
				for k, v := range ss.failures {
					if now.Sub(v.first) > lockoutWindow {
						delete(ss.failures, k)
					}
				}
			}
			if len(ss.failures) < maxFailureNames {
				f = &loginFailures{first: now}
				ss.failures[name] = f
			}
		}
		if f != nil {
			f.n++
		}
		return nil, errBadLogin
	}
	delete(ss.failures, name)
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("cannot make a session token: %w", err)
	}
	s := &session{token: base64.RawURLEncoding.EncodeToString(b[:]), user: u, created: now, expires: now.Add(ss.ttl)}
	if len(ss.byID) >= ss.max {
		ss.expireLocked(now)
	}
	for len(ss.byID) >= ss.max {
		var oldest *session
		for _, o := range ss.byID {
			if oldest == nil || o.created.Before(oldest.created) {
				oldest = o
			}
		}
		delete(ss.byID, oldest.token)
	}
	ss.byID[s.token] = s
	return s, nil
}

func (ss *sessions) expireLocked(now time.Time) {
	for k, s := range ss.byID {
		if !now.Before(s.expires) {
			delete(ss.byID, k)
		}
	}
}

// get returns the live session of token, or nil.
func (ss *sessions) get(token string, now time.Time) *session {
	if token == "" {
		return nil
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.byID[token]
	if s == nil {
		return nil
	}
	if subtle.ConstantTimeCompare([]byte(s.token), []byte(token)) != 1 || !now.Before(s.expires) {
		delete(ss.byID, token)
		return nil
	}
	return s
}

func (ss *sessions) logout(token string) {
	ss.mu.Lock()
	delete(ss.byID, token)
	ss.mu.Unlock()
}

// policy is who may use a route. A route is registered with exactly one;
// the zero policy admits nobody.
type policy struct {
	public bool
	roles  []Role
	// page routes send a browser without a session to the login page
	// instead of answering 401.
	page bool
}

func (p policy) admits(u *User) bool {
	if p.public {
		return true
	}
	return u != nil && slices.Contains(p.roles, u.Role)
}

func (p policy) String() string {
	if p.public {
		return "public"
	}
	var rs []string
	for _, r := range p.roles {
		rs = append(rs, string(r))
	}
	return strings.Join(rs, ",")
}

// The policies of the routes.
var (
	public      = policy{public: true}
	anyUser     = policy{roles: []Role{RoleOperator, RolePatrol, RoleAnalyst, RoleAdmin}}
	viewers     = policy{roles: []Role{RoleOperator, RoleAnalyst, RoleAdmin}}
	actors      = policy{roles: []Role{RoleOperator, RoleAdmin}}
	analysts    = policy{roles: []Role{RoleAnalyst, RoleAdmin}}
	patrolOnly  = policy{roles: []Role{RolePatrol}}
	adminOnly   = policy{roles: []Role{RoleAdmin}}
	consolePage = policy{roles: []Role{RoleOperator, RoleAdmin}, page: true}
	patrolPage  = policy{roles: []Role{RolePatrol}, page: true}
	trendsPage  = policy{roles: []Role{RoleAnalyst, RoleAdmin}, page: true}
	statusPage  = policy{roles: []Role{RoleAdmin}, page: true}
)

// DemoLogin is one demo account and its password, printed by
// `citywatch demo`.
type DemoLogin struct {
	Name, Password string
	Role           Role
	Unit           string
}

// DemoUsers writes a users file with one user per role (the patrol user
// bound to unit) and fresh random passwords, and returns the logins.
func DemoUsers(path, unit string) ([]DemoLogin, error) {
	var logins []DemoLogin
	var users []User
	for _, r := range Roles {
		var b [9]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("cannot make a password: %w", err)
		}
		l := DemoLogin{Name: "demo-" + string(r), Password: base64.RawURLEncoding.EncodeToString(b[:]), Role: r}
		if r == RolePatrol {
			l.Unit = unit
		}
		h, err := bcrypt.GenerateFromPassword([]byte(l.Password), minBcryptCost)
		if err != nil {
			return nil, fmt.Errorf("cannot hash password: %w", err)
		}
		users = append(users, User{Name: l.Name, Role: r, PasswordHash: string(h), Unit: l.Unit})
		logins = append(logins, l)
	}
	if err := WriteUsers(path, users); err != nil {
		return nil, err
	}
	return logins, nil
}
