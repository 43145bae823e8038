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

// ParseSchedule parses a cron spec: five fields (minute hour day-of-month
// month day-of-week), a descriptor such as @daily, @weekly, @monthly or
// "@every 720h", optionally prefixed with a time zone, "CRON_TZ=Europe/Paris
// 0 3 * * 1". Times are UTC without a CRON_TZ.
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
	return s, nil
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
func isDue(sched Schedule, base, now time.Time) bool {
	due := nextDue(sched, base)
	if due.IsZero() {
		return true
	}
	slack := dueSlack
	if p := sched.Next(due).Sub(due) / 10; p < slack {
		slack = p
	}
	return !due.After(now.Add(slack))
}
