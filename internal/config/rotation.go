package config

// Rotation configures the rotation of one key. The rotation package reads it.
type Rotation struct {
	// Schedule is a cron spec (5 fields, @weekly, CRON_TZ=...).
	Schedule string `yaml:"schedule"`
	// Grace is how long the old key stays valid after promotion. It must be
	// at least the longest consumer refresh gap (refresh + jitter).
	Grace Duration `yaml:"grace"`
}

func (r *Rotation) validate(path string, k *Key, c *Config) []string {
	var errs []string
	if r.Grace.D < k.LongestRefreshGap() {
		errs = append(errs, path+".grace: "+r.Grace.D.String()+" is shorter than the key's refresh + jitter ("+
			k.LongestRefreshGap().String()+"); consumers could still hold the old key when it is revoked: raise grace or lower refresh")
	}
	return errs
}

// Rotator configures the rotation commands.
type Rotator struct{}

func (r *Rotator) validate(path string, c *Config) []string { return nil }
