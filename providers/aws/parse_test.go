package aws

import (
	"net/url"
	"testing"
)

func TestParseURLRegion(t *testing.T) {
	cases := []struct{ url, region string }{
		{"awssm://a/b?region=us-east-1", "us-east-1"},
		{"awssm:///arn:aws:secretsmanager:ap-south-1:123456789012:secret:a/b-AbCdEf", "ap-south-1"},
		{"awssm:///arn:aws:secretsmanager:ap-south-1:123456789012:secret:a?region=eu-west-1", "eu-west-1"},
		{"awssm://a/b", ""}, // the SDK's default chain decides
	}
	for _, c := range cases {
		u, err := url.Parse(c.url)
		if err != nil {
			t.Fatal(err)
		}
		got, err := parseURL(u)
		if err != nil {
			t.Fatalf("parseURL(%s): %v", c.url, err)
		}
		if got.region != c.region {
			t.Errorf("parseURL(%s): region %q, want %q", c.url, got.region, c.region)
		}
	}
}
