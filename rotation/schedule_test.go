package rotation

import (
	"strings"
	"testing"
	"time"

	"github.com/keywarden/keywarden/providers/driver"
)

func TestParseSchedule(t *testing.T) {
	mon := time.Date(2026, 11, 23, 2, 0, 0, 0, time.UTC) // a Monday
	for _, tc := range []struct {
		spec string
		from time.Time
		want time.Time
	}{
		{"0 3 * * 1", mon, time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC)},
		{"0 3 * * 1", mon.Add(2 * time.Hour), time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC)},
		{"*/15 * * * *", mon.Add(7 * time.Minute), mon.Add(15 * time.Minute)},
		{"@weekly", mon, time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)}, // Sunday midnight
		{"@daily", mon, time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)},
		{"@monthly", mon, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)},
		{"@every 720h", mon, mon.Add(720 * time.Hour)},
		// 03:00 in Paris (UTC+1 in November) is 02:00 UTC.
		{"CRON_TZ=Europe/Paris 0 3 * * 1", mon.Add(-2 * time.Hour), time.Date(2026, 11, 23, 2, 0, 0, 0, time.UTC)},
		{"TZ=America/New_York @daily", mon, time.Date(2026, 11, 23, 5, 0, 0, 0, time.UTC)},
		{"  0 3 * * 1  ", mon, time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC)},
	} {
		s, err := ParseSchedule(tc.spec)
		if err != nil {
			t.Errorf("%q: %v", tc.spec, err)
			continue
		}
		if got := s.Next(tc.from); !got.Equal(tc.want) {
			t.Errorf("%q.Next(%v) = %v, want %v", tc.spec, tc.from, got.UTC(), tc.want)
		}
	}
}

func TestParseScheduleErrors(t *testing.T) {
	const fields = "5 fields"
	for _, tc := range []struct{ spec, want, fix string }{
		{"", "empty schedule", ""},
		{"0 3 * *", "expected exactly 5 fields", fields},
		{"0 0 3 * * 1", "expected exactly 5 fields", fields},
		{"@fortnightly", "unrecognized descriptor", fields},
		{"61 * * * *", "above maximum", fields},
		{"CRON_TZ=Nowhere/Atlantis 0 3 * * *", "bad location", fields},
		{"CRON_TZ=UTC", "has a time zone but no schedule", ""},
		// cron's Next returns the zero time for a spec that never fires.
		{"0 0 31 2 *", "never fires", "day of month"},
		{"CRON_TZ=Europe/Paris 0 3 30 2 *", "never fires", "day of month"},
		// cron rounds these up to a second; a rotation cannot be that short.
		{"@every -1s", "at least 1m0s", "@every 720h"},
		{"@every 0s", "at least 1m0s", "@every 720h"},
		{"@every 1ns", "at least 1m0s", "@every 720h"},
		{"@every 59s", "at least 1m0s", "@every 720h"},
		{"CRON_TZ=UTC @every 1s", "at least 1m0s", "@every 720h"},
	} {
		_, err := ParseSchedule(tc.spec)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.spec, err, tc.want)
		}
		if err != nil && !strings.Contains(err.Error(), tc.fix) {
			t.Errorf("%q: the error does not say how to fix it (%q): %v", tc.spec, tc.fix, err)
		}
	}
	for _, spec := range []string{"@every 1m", "0 0 29 2 *"} { // Feb 29th fires in leap years
		if _, err := ParseSchedule(spec); err != nil {
			t.Errorf("%q: %v", spec, err)
		}
	}
}

// never is a Schedule with no next activation, as cron's is for "0 0 31 2 *".
type never struct{}

func (never) Next(time.Time) time.Time { return time.Time{} }

// nopStager and nopIssuer fill a Key for New, which never calls them.
type (
	nopStager struct{ driver.Stager }
	nopIssuer struct{ Issuer }
)

// TestNeverFiresIsNeverDue: a schedule whose Next is the zero time is never
// due (it was taken for "due at once": every run rotated), and New refuses
// it.
func TestNeverFiresIsNeverDue(t *testing.T) {
	now := time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC)
	if isDue(never{}, now.Add(-24*time.Hour), now) {
		t.Error("a schedule that never fires is due")
	}
	if !isDue(never{}, time.Time{}, now) {
		t.Error("a key never rotated is not due at once")
	}
	_, err := New(Options{}, &Key{Name: "k", Store: nopStager{}, Issuer: nopIssuer{}, Schedule: never{}})
	if err == nil || !strings.Contains(err.Error(), "never fires") || KindOf(err) != KindConfig {
		t.Errorf("New: %v, want a config error saying the schedule never fires", err)
	}
}

func TestIsDue(t *testing.T) {
	weekly, _ := ParseSchedule("0 3 * * 1")
	every, _ := ParseSchedule("*/5 * * * *")
	last := time.Date(2026, 11, 16, 3, 0, 4, 0, time.UTC) // last Monday's run
	for _, tc := range []struct {
		name  string
		s     Schedule
		base  time.Time
		now   time.Time
		want  bool
		nextT time.Time
	}{
		{"never rotated", weekly, time.Time{}, last, true, time.Time{}},
		{"a day later", weekly, last, last.Add(24 * time.Hour), false, time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC)},
		{"on time", weekly, last, time.Date(2026, 11, 23, 3, 0, 1, 0, time.UTC), true, time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC)},
		{"a CronJob firing 30s early", weekly, last, time.Date(2026, 11, 23, 2, 59, 30, 0, time.UTC), true, time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC)},
		{"two minutes early", weekly, last, time.Date(2026, 11, 23, 2, 58, 0, 0, time.UTC), false, time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC)},
		{"missed a week", weekly, last, last.Add(15 * 24 * time.Hour), true, time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC)},
		// The slack is a tenth of the period for short periods: 30s of 5m.
		{"short period, 20s early", every, last, time.Date(2026, 11, 16, 3, 4, 40, 0, time.UTC), true, time.Date(2026, 11, 16, 3, 5, 0, 0, time.UTC)},
		{"short period, 40s early", every, last, time.Date(2026, 11, 16, 3, 4, 20, 0, time.UTC), false, time.Date(2026, 11, 16, 3, 5, 0, 0, time.UTC)},
	} {
		if got := isDue(tc.s, tc.base, tc.now); got != tc.want {
			t.Errorf("%s: isDue = %v, want %v", tc.name, got, tc.want)
		}
		if got := nextDue(tc.s, tc.base); !got.Equal(tc.nextT) {
			t.Errorf("%s: nextDue = %v, want %v", tc.name, got, tc.nextT)
		}
	}
}
