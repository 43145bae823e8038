package rotation

import (
	"fmt"
	"strings"
	"time"

	_ "time/tzdata" // CRON_TZ= zones on images without a zoneinfo database

	"github.com/robfig/cron/v3"
)

// Schedule says when a key is due for rotation. A cron schedule from
// ParseSchedule is one.
type Schedule interface {
	// Next returns the first activation time strictly after t.
	Next(t time.Time) time.Time
}

// MinEvery is the shortest period of an "@every" schedule: a rotation
// includes a grace period of minutes, so a key cannot usefully rotate more
// often.
const MinEvery = time.Minute

// ParseSchedule parses a cron spec: five fields (minute hour day-of-month
// month day-of-week), a descriptor such as @daily, @weekly, @monthly or
// "@every 720h", optionally prefixed with a time zone, "CRON_TZ=Europe/Paris
// 0 3 * * 1". Times are UTC without a CRON_TZ. It refuses an "@every"
// period shorter than MinEvery (a negative or zero one included) and a spec
// that never fires (such as "0 0 31 2 *", February 31st).
//
// Across the clock changes of the zone, a spec whose hour field names hours
// ("30 2 * * 0", @daily) fires each local date and time it matches once: a
// local time repeated by a change back at its first occurrence only, the
// local times skipped by a change forward once, at the change. A spec
// matching every hour ("*/15 * * * *", @hourly) follows real time: it fires
// in both passes of a repeated hour and nothing extra at a change forward.
// "@every" counts real time.
func ParseSchedule(spec string) (Schedule, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return nil, fmt.Errorf("rotation: empty schedule; use a cron spec such as \"0 3 * * 1\" or @weekly")
	}
	full := spec
	if strings.HasPrefix(spec, "CRON_TZ=") || strings.HasPrefix(spec, "TZ=") {
		if !strings.ContainsAny(spec, " \t") {
			return nil, fmt.Errorf("rotation: schedule %q has a time zone but no schedule; write e.g. \"CRON_TZ=Europe/Paris 0 3 * * 1\"", spec)
		}
		// cron splits on the first space only.
		i := strings.IndexAny(spec, " \t")
		full = spec[:i] + " " + strings.TrimSpace(spec[i:])
	} else {
		full = "CRON_TZ=UTC " + spec // cron's default would be the machine's zone
	}
	s, err := cron.ParseStandard(full)
	if err != nil {
		return nil, fmt.Errorf("rotation: schedule %q: %v; use 5 fields (minute hour day-of-month month day-of-week) such as \"0 3 * * 1\", a descriptor such as @weekly, optionally prefixed with CRON_TZ=Region/City", spec, err)
	}
	// cron rounds any period under a second, a negative one included, up
	// to a second: refuse what it parsed, whatever was written.
	if every, ok := s.(cron.ConstantDelaySchedule); ok && every.Delay < MinEvery {
		return nil, fmt.Errorf("rotation: schedule %q: an @every period must be at least %v (a rotation includes a grace period of minutes); write e.g. \"@every 720h\"", spec, MinEvery)
	}
	var sched Schedule = s
	if cs, ok := s.(*cron.SpecSchedule); ok && cs.Hour&allHours != allHours {
		sched = wallClock{cs}
	}
	if err := checkFires(sched, time.Now()); err != nil {
		return nil, fmt.Errorf("rotation: schedule %q: %w", spec, err)
	}
	return sched, nil
}

// allHours is a cron hour field that matches every hour of the day.
const allHours = 1<<24 - 1

// wallClock is a cron schedule whose hour field names hours (not every
// hour), pinned to the local wall clock across the clock changes of its
// time zone: each local date and time the spec matches fires once. cron's
// own Next fires a local time that a clock change back repeats twice (both
// passes of 02:30 on the last Sunday of October in Paris) and never a
// local time that a clock change forward skips (02:30 on the last Sunday of
// March): a daily or weekly rotation ran twice that night, or not at all
// that day or week.
//
// So a repeated local time fires at its first occurrence only, and the
// local times that a clock change forward skips fire once, at the change.
// Between changes the zone's offset is fixed, and cron's Next at that
// fixed offset gives the times (cron's own stepping through a change is
// not used: it also skips days and fires unmatched times in zones whose
// clocks change by half an hour).
//
// wallClock is immutable and safe for concurrent use.
type wallClock struct{ spec *cron.SpecSchedule }

// Next returns the first activation strictly after t, or the zero time
// when there is none in the next five years.
func (w wallClock) Next(t time.Time) time.Time {
	limit := t.AddDate(5, 0, 0)
	// One zone period (an offset between two clock changes) a turn: in
	// at, activations after from.
	at, from := t.In(w.spec.Location), t
	for entered := false; at.Before(limit); entered = true {
		start, end := at.ZoneBounds()
		_, off := at.Zone()
		prev := off
		if !start.IsZero() {
			_, prev = start.Add(-time.Second).Zone()
		}
		if entered && off > prev {
			// A change forward after t: the local times it skipped, read
			// at the offset before it, are the instants [start, start+gap).
			gap := time.Duration(off-prev) * time.Second
			if m := w.at(prev).Next(start.Add(-time.Second)); !m.IsZero() && m.Before(start.Add(gap)) {
				return start.In(t.Location())
			}
		}
		// A change back at start shows the local times of its first back
		// seconds a second time: they fired (or were due at or before t)
		// in the period before.
		back := time.Duration(prev-off) * time.Second
		spec := w.at(off)
		for m := spec.Next(from); ; m = spec.Next(m) {
			if m.IsZero() {
				return m
			}
			if !end.IsZero() && !m.Before(end) {
				break
			}
			if back <= 0 || m.Sub(start) >= back {
				return m.In(t.Location())
			}
		}
		at, from = end, end.Add(-time.Second) // the next period, from its first instant
	}
	return time.Time{}
}

// at returns the spec at the fixed UTC offset off, in seconds.
func (w wallClock) at(off int) *cron.SpecSchedule {
	s := *w.spec
	s.Location = time.FixedZone("", off)
	return &s
}

// checkFires refuses a schedule that has no activation after now: cron's
// Next returns the zero time for a spec such as "0 0 31 2 *" (February
// 31st), which must never be taken for "due at once".
func checkFires(s Schedule, now time.Time) error {
	if s.Next(now).IsZero() {
		return fmt.Errorf("never fires (no such date in the next years); check the day of month against the month")
	}
	return nil
}

// dueSlack is how early a run may come and still find a scheduled rotation
// due: a CronJob firing a few seconds before the schedule's minute must not
// skip a whole period.
const dueSlack = time.Minute

// nextDue returns when a key last rotated (or first stored) at base is next
// due under sched. A zero base is due at once.
func nextDue(sched Schedule, base time.Time) time.Time {
	if sched == nil || base.IsZero() {
		return time.Time{}
	}
	return sched.Next(base)
}

// isDue reports whether a rotation is due at now: its due time has come,
// allowing a slack of a tenth of the schedule's period, at most dueSlack.
// A key never rotated (zero base) is due at once; a schedule with no next
// activation is never due.
func isDue(sched Schedule, base, now time.Time) bool {
	if sched == nil || base.IsZero() {
		return true
	}
	due := sched.Next(base)
	if due.IsZero() {
		return false
	}
	return !due.After(now.Add(slackOf(sched, due)))
}

// slackOf is how early a run may come for the activation due: a tenth of
// the schedule's period there, at most dueSlack.
func slackOf(sched Schedule, due time.Time) time.Duration {
	slack := dueSlack
	if after := sched.Next(due); !after.IsZero() && after.Sub(due)/10 < slack {
		slack = after.Sub(due) / 10
	}
	return slack
}

// servedSlot returns the activation a rotation started at now serves, to
// record as its attempt: an activation that is still to come but within
// the slack (a CronJob firing early), else now. Recording now for an early
// run would make that same activation due again moments later.
func servedSlot(sched Schedule, now time.Time) time.Time {
	if sched == nil {
		return now
	}
	if next := sched.Next(now); !next.IsZero() && !next.After(now.Add(slackOf(sched, next))) {
		return next
	}
	return now
}
