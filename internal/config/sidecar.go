package config

// Sidecar configures `keywarden sidecar`.
type Sidecar struct {
	// Listen is the proxy's address (default 127.0.0.1:8787).
	Listen string `yaml:"listen"`
}

func (s *Sidecar) validate(path string, c *Config) []string { return nil }
