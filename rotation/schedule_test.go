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

// utc is a time in UTC, to the minute.
func utc(month time.Month, day, hour, minute int) time.Time {
	return time.Date(2026, month, day, hour, minute, 0, 0, time.UTC)
}

// nexts returns n consecutive activations of s after from.
func nexts(s Schedule, from time.Time, n int) []time.Time {
	var got []time.Time
	for t := from; len(got) < n; {
		t = s.Next(t)
		got = append(got, t)
	}
	return got
}

// TestScheduleClockChanges: a spec with fixed hours fires each local date
// and time once across the clock changes of 2026: a local time that a
// change back repeats only at its first occurrence (cron fired both), a
// local time that a change forward skips once, at the change (cron fired
// none). A spec matching every hour keeps real time through both.
//
// Europe/Paris: 2026-03-29 01:00 UTC, 02:00 CET (UTC+1) becomes 03:00 CEST
// (UTC+2); 2026-10-25 01:00 UTC, 03:00 CEST becomes 02:00 CET.
// America/New_York: 2026-03-08 07:00 UTC, 02:00 EST (UTC-5) becomes 03:00
// EDT (UTC-4); 2026-11-01 06:00 UTC, 02:00 EDT becomes 01:00 EST.
func TestScheduleClockChanges(t *testing.T) {
	const paris, newYork = "CRON_TZ=Europe/Paris ", "CRON_TZ=America/New_York "
	for _, tc := range []struct {
		name, spec string
		from       time.Time
		want       []time.Time
	}{
		{"Paris daily, back", paris + "30 2 * * *", utc(10, 24, 0, 0), []time.Time{
			utc(10, 24, 0, 30), // 02:30 CEST
			utc(10, 25, 0, 30), // 02:30 CEST; not again at 02:30 CET (01:30 UTC)
			utc(10, 26, 1, 30), // 02:30 CET
		}},
		{"Paris daily, forward", paris + "30 2 * * *", utc(3, 28, 0, 0), []time.Time{
			utc(3, 28, 1, 30), // 02:30 CET
			utc(3, 29, 1, 0),  // no 02:30 that day: at the change (03:00 CEST)
			utc(3, 30, 0, 30), // 02:30 CEST
		}},
		{"Paris weekly, back", paris + "30 2 * * 0", utc(10, 18, 12, 0), []time.Time{
			utc(10, 25, 0, 30), utc(11, 1, 1, 30), utc(11, 8, 1, 30),
		}},
		{"Paris weekly, forward", paris + "30 2 * * 0", utc(3, 21, 12, 0), []time.Time{
			utc(3, 22, 1, 30), utc(3, 29, 1, 0), utc(4, 5, 0, 30),
		}},
		{"Paris weekly, from between the two 02:30", paris + "30 2 * * 0", utc(10, 25, 1, 0), []time.Time{
			utc(11, 1, 1, 30),
		}},
		{"Paris weekly, from the first 02:30", paris + "30 2 * * 0", utc(10, 25, 0, 30), []time.Time{
			utc(11, 1, 1, 30),
		}},
		{"Paris 03:00, back (unaffected)", paris + "0 3 * * *", utc(10, 24, 0, 0), []time.Time{
			utc(10, 24, 1, 0), utc(10, 25, 2, 0), utc(10, 26, 2, 0),
		}},
		{"Paris 03:00, forward (unaffected)", paris + "0 3 * * *", utc(3, 28, 0, 0), []time.Time{
			utc(3, 28, 2, 0), utc(3, 29, 1, 0), utc(3, 30, 1, 0),
		}},
		{"Paris every 15 minutes in hour 2, back", paris + "*/15 2 * * *", utc(10, 24, 23, 0), []time.Time{
			utc(10, 25, 0, 0), utc(10, 25, 0, 15), utc(10, 25, 0, 30), utc(10, 25, 0, 45), // CEST only
			utc(10, 26, 1, 0),
		}},
		{"Paris every 15 minutes in hour 2, forward", paris + "*/15 2 * * *", utc(3, 28, 23, 0), []time.Time{
			utc(3, 29, 1, 0), // the four skipped times fire once, at the change
			utc(3, 30, 0, 0),
		}},
		// Every hour: real time, both passes of the repeated hour, nothing
		// extra at the change forward (cron's own times).
		{"Paris every 15 minutes, back", paris + "*/15 * * * *", utc(10, 25, 0, 40), []time.Time{
			utc(10, 25, 0, 45), utc(10, 25, 1, 0), utc(10, 25, 1, 15), utc(10, 25, 1, 30), utc(10, 25, 1, 45), utc(10, 25, 2, 0),
		}},
		{"Paris every 15 minutes, forward", paris + "*/15 * * * *", utc(3, 29, 0, 40), []time.Time{
			utc(3, 29, 0, 45), utc(3, 29, 1, 0), utc(3, 29, 1, 15),
		}},
		{"Paris hourly at :30, forward", paris + "30 * * * *", utc(3, 29, 0, 0), []time.Time{
			utc(3, 29, 0, 30), utc(3, 29, 1, 30), utc(3, 29, 2, 30),
		}},
		{"New York daily 01:30, back", newYork + "30 1 * * *", utc(10, 31, 0, 0), []time.Time{
			utc(10, 31, 5, 30), // 01:30 EDT
			utc(11, 1, 5, 30),  // 01:30 EDT; not again at 01:30 EST (06:30 UTC)
			utc(11, 2, 6, 30),  // 01:30 EST
		}},
		{"New York daily 02:30, forward", newYork + "30 2 * * *", utc(3, 7, 0, 0), []time.Time{
			utc(3, 7, 7, 30), // 02:30 EST
			utc(3, 8, 7, 0),  // at the change (03:00 EDT)
			utc(3, 9, 6, 30), // 02:30 EDT
		}},
		{"New York daily 02:30, back (unaffected)", newYork + "30 2 * * *", utc(10, 31, 0, 0), []time.Time{
			utc(10, 31, 6, 30), utc(11, 1, 7, 30), utc(11, 2, 7, 30),
		}},
		{"New York weekly, back", newYork + "30 1 * * 0", utc(10, 25, 12, 0), []time.Time{
			utc(11, 1, 5, 30), utc(11, 8, 6, 30),
		}},
		{"New York weekly, forward", newYork + "30 2 * * 0", utc(3, 1, 12, 0), []time.Time{
			utc(3, 8, 7, 0), utc(3, 15, 6, 30),
		}},
	} {
		s, err := ParseSchedule(tc.spec)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got := nexts(s, tc.from, len(tc.want))
		for i := range tc.want {
			if !got[i].Equal(tc.want[i]) {
				t.Errorf("%s: %q from %v: got %v, want %v", tc.name, tc.spec, tc.from, got, tc.want)
				break
			}
		}
	}
}

// TestScheduleOncePerLocalDay: through all of 2026, a daily spec fires on
// every local date exactly once and a weekly one on every Sunday exactly
// once, whatever the clock changes, and no local time fires twice.
func TestScheduleOncePerLocalDay(t *testing.T) {
	for _, tc := range []struct {
		zone, spec string
		perYear    int
	}{
		{"Europe/Paris", "30 2 * * *", 365},
		{"Europe/Paris", "30 2 * * 0", 52},
		{"Europe/Paris", "0 3 * * *", 365},
		{"America/New_York", "30 1 * * *", 365},
		{"America/New_York", "30 2 * * *", 365},
		{"America/New_York", "30 2 * * 0", 52},
		// Clocks change by half an hour: cron's own steps skipped the day
		// after each change and fired 01:30 at 02:30 on the change forward.
		{"Australia/Lord_Howe", "0 0 * * *", 365},
		{"Australia/Lord_Howe", "30 1 * * *", 365},
	} {
		loc, err := time.LoadLocation(tc.zone)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ParseSchedule("CRON_TZ=" + tc.zone + " " + tc.spec)
		if err != nil {
			t.Fatal(err)
		}
		days := map[string]int{}
		clocks := map[string]bool{}
		end := time.Date(2027, 1, 1, 0, 0, 0, 0, loc)
		for at := s.Next(time.Date(2026, 1, 1, 0, 0, 0, 0, loc).Add(-time.Second)); at.Before(end); at = s.Next(at) {
			local := at.In(loc)
			days[local.Format(time.DateOnly)]++
			if clock := local.Format(time.DateTime); clocks[clock] {
				t.Errorf("%s %q: %s local fires twice", tc.zone, tc.spec, clock)
			} else {
				clocks[clock] = true
			}
		}
		if len(days) != tc.perYear {
			t.Errorf("%s %q: fires on %d local dates in 2026, want %d", tc.zone, tc.spec, len(days), tc.perYear)
		}
		for day, n := range days {
			if n != 1 {
				t.Errorf("%s %q: fires %d times on %s", tc.zone, tc.spec, n, day)
			}
		}
	}
}

// TestScheduleCronJobAcrossClockChanges: a CronJob running every 30
// minutes, due by isDue and recording servedSlot as begin does, rotates a
// weekly key once on the Sunday of each clock change: cron's times
// rotated twice in the night of the change back (two pool keys used) and
// not at all on the Sunday of the change forward (two weeks between
// rotations).
func TestScheduleCronJobAcrossClockChanges(t *testing.T) {
	for _, tc := range []struct {
		name, spec string
		last       time.Time // the previous week's rotation
		want       time.Time
		next       time.Time // the next week's
	}{
		{"Paris, back", "CRON_TZ=Europe/Paris 30 2 * * 0", utc(10, 18, 0, 30), utc(10, 25, 0, 30), utc(11, 1, 1, 30)},
		{"Paris, forward", "CRON_TZ=Europe/Paris 30 2 * * 0", utc(3, 22, 1, 30), utc(3, 29, 1, 0), utc(4, 5, 0, 30)},
		{"New York, back", "CRON_TZ=America/New_York 30 1 * * 0", utc(10, 25, 5, 30), utc(11, 1, 5, 30), utc(11, 8, 6, 30)},
		{"New York, forward", "CRON_TZ=America/New_York 30 2 * * 0", utc(3, 1, 7, 30), utc(3, 8, 7, 0), utc(3, 15, 6, 30)},
	} {
		s, err := ParseSchedule(tc.spec)
		if err != nil {
			t.Fatal(err)
		}
		base := tc.last
		var rotated []time.Time
		// From Saturday noon to Monday noon, runs a few seconds late.
		day := tc.want.Truncate(24 * time.Hour)
		for now := day.Add(-12 * time.Hour).Add(5 * time.Second); now.Before(day.Add(36 * time.Hour)); now = now.Add(30 * time.Minute) {
			if isDue(s, base, now) {
				rotated = append(rotated, now.Truncate(time.Minute))
				base = servedSlot(s, now)
			}
		}
		if len(rotated) != 1 || !rotated[0].Equal(tc.want) {
			t.Errorf("%s: rotated at %v, want once at %v", tc.name, rotated, tc.want)
		}
		if got := nextDue(s, base); !got.Equal(tc.next) {
			t.Errorf("%s: next due %v, want %v", tc.name, got, tc.next)
		}
	}
}
