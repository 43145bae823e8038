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
	if err := checkFires(s, time.Now()); err != nil {
		return nil, fmt.Errorf("rotation: schedule %q: %w", spec, err)
	}
	return s, nil
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
