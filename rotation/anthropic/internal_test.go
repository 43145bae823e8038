package anthropic

import (
	"net/http"
	"testing"
	"time"
)

func TestHintMatches(t *testing.T) {
	const key = "sk-ant-api03-R2D2c3po0123456789abcdefghijklmnopqrstuvwxyzigAA"
	for _, tc := range []struct {
		hint string
		want bool
	}{
		{"sk-ant-api03-R2D...igAA", true},
		{"sk-ant-api03-R2D…igAA", true},
		{"sk-ant-api03-R2E...igAA", false},
		{"sk-ant-api03-R2D...igAB", false},
		{"sk-ant-api03-R2D", false},
		{"...igAA", false},
		{"", false},
		{"sk-ant-api03-R2D2c3po0123456789abcdefghijklmnopqrstuvwxyz...zigAA", false}, // longer than the key
	} {
		if got := hintMatches(tc.hint, key); got != tc.want {
			t.Errorf("hintMatches(%q) = %v, want %v", tc.hint, got, tc.want)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		v    string
		want time.Duration
	}{
		{"", 0}, {"3", 3 * time.Second}, {"0.5", 500 * time.Millisecond}, {"-1", 0}, {"soon", 0},
	} {
		if got := retryAfter(tc.v); got != tc.want {
			t.Errorf("retryAfter(%q) = %v, want %v", tc.v, got, tc.want)
		}
	}
	if d := retryAfter(time.Now().Add(time.Minute).UTC().Format(http.TimeFormat)); d < 50*time.Second || d > time.Minute {
		t.Errorf("HTTP date: %v", d)
	}
}

func TestRoundAge(t *testing.T) {
	for _, tc := range []struct{ in, want time.Duration }{
		{1500 * time.Millisecond, 2 * time.Second},
		{61 * time.Second, time.Minute},
		{29*time.Minute + 40*time.Second, 30 * time.Minute},
		{50*time.Hour + 20*time.Minute, 50 * time.Hour},
	} {
		if got := roundAge(tc.in); got != tc.want {
			t.Errorf("roundAge(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
