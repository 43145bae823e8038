package proxy

import (
	"errors"
	"fmt"
	"time"

	"github.com/keywarden/keywarden/internal/proxy/settings"
)

// validate checks the settings of o that do not depend on its routes.
func (o *Options) validate() error {
	var errs []error
	for _, p := range o.AllowPaths {
		if err := settings.CheckAllowPath(p); err != nil {
			errs = append(errs, fmt.Errorf("allow path %w", err))
		}
	}
	if err := settings.CheckMaxRetryBody(o.MaxRetryBody); err != nil {
		errs = append(errs, fmt.Errorf("max retry body %w", err))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"HeaderTimeout", o.HeaderTimeout}, {"ClientHeaderTimeout", o.ClientHeaderTimeout}, {"IdleTimeout", o.IdleTimeout}, {"ShutdownTimeout", o.ShutdownTimeout}} {
		if err := settings.CheckTimeout(d.v); err != nil {
			errs = append(errs, fmt.Errorf("%s %w", d.name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	return nil
}

// setDefaults fills the zero fields that have defaults.
func (o *Options) setDefaults() {
	if o.HeaderTimeout == 0 {
		o.HeaderTimeout = settings.DefaultHeaderTimeout
	}
	if o.ClientHeaderTimeout == 0 {
		o.ClientHeaderTimeout = settings.DefaultClientHeaderTimeout
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = settings.DefaultIdleTimeout
	}
	if o.ShutdownTimeout == 0 {
		o.ShutdownTimeout = settings.DefaultShutdownTimeout
	}
	if len(o.AllowPaths) == 0 {
		o.AllowPaths = settings.DefaultAllowPaths
	}
}
