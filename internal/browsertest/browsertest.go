// Package browsertest starts Debian's chromium, headless, for the tests
// that drive the web pages: the console, patrol and trends tests in web/
// and the end-to-end latency test in internal/e2e. It is test support and
// is imported only by tests.
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"github.com/chromedp/chromedp"
)

// EnvRequire, set to 1 by `make test`, turns a missing chromium into a
// failure instead of a skip.
const EnvRequire = "CITYWATCH_REQUIRE_BROWSER"

// Path returns the path of chromium, or skips the test (fails it with
// EnvRequire=1) when none is installed.
func Path(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "chromium is not installed: run deploy/deps.sh (Debian package chromium)"
	if os.Getenv(EnvRequire) == "1" {
		t.Fatalf("%s; %s=1 requires it", msg, EnvRequire)
	}
	t.Skip(msg)
	return ""
}

// Start starts a headless chromium that lives until ctx ends or the test
// is cleaned up, and returns its first tab.
func Start(t testing.TB, ctx context.Context) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(Path(t)), chromedp.NoSandbox, chromedp.WindowSize(1400, 900),
		chromedp.Flag("disable-gpu", true), chromedp.Flag("autoplay-policy", "no-user-gesture-required"))
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(acancel)
	base, bcancel := chromedp.NewContext(actx)
	t.Cleanup(bcancel)
	if err := chromedp.Do(base); err != nil {
		t.Fatalf("cannot start chromium: %v", err)
	}
	return base
}

// Session opens a tab in a browser context of its own (own cookies and
// storage), as a second person on another machine would have.
func Session(t testing.TB, base context.Context) context.Context {
	t.Helper()
	c, cancel := chromedp.NewContext(base, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	return c
}

// Login signs name in on the login page of the web role at baseURL.
func Login(t testing.TB, c context.Context, baseURL, name, password string) {
	t.Helper()
	if err := chromedp.Do(c,
		chromedp.Navigate(baseURL+"/login"),
		chromedp.WaitVisible("#name"),
		chromedp.SendKeys("#name", name),
		chromedp.SendKeys("#password", password),
		chromedp.Click("button[type=submit]"),
	); err != nil {
		t.Fatalf("cannot log %s in: %v", name, err)
	}
}
