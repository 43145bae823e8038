package vault

import (
	"context"
	"strconv"

	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
)

func (s *Store) recordPath(name string) string { return s.prefix + "/records/" + name }

// ReadRecord returns the rotation record of name; its Rev is the KV version
// of the record document ("" when there is none).
func (s *Store) ReadRecord(ctx context.Context, name string) (*driver.Record, error) {
	if err := s.check(name); err != nil {
		return nil, err
	}
	v, err := s.readKV(ctx, s.recordPath(name), 0)
	if err != nil {
		return nil, err
	}
	rec := &driver.Record{Data: map[string]string{}}
	if v == nil {
		return rec, nil
	}
	rec.Rev = strconv.Itoa(v.version)
	for k, x := range v.data {
		str, ok := x.(string)
		if !ok {
			return nil, codes.Errorf(codes.Internal, "vault: record of %s/%s: field %q is not a string", s.mount, name, k)
		}
		rec.Data[k] = str
	}
	return rec, nil
}

// WriteRecord writes data as the record of name with check-and-set on rev.
func (s *Store) WriteRecord(ctx context.Context, name, rev string, data map[string]string) (*driver.Record, error) {
	if err := s.check(name); err != nil {
		return nil, err
	}
	cas := 0
	if rev != "" {
		n, err := strconv.Atoi(rev)
		if err != nil || n <= 0 {
			return nil, codes.Errorf(codes.Aborted, "vault: record of %s/%s: revision %q is not one this driver wrote", s.mount, name, rev)
		}
		cas = n
	}
	m := make(map[string]any, len(data))
	for k, v := range data {
		m[k] = v
	}
	v, err := s.writeKV(ctx, s.recordPath(name), m, cas)
	if err != nil {
		if codes.Is(err, codes.Aborted) {
			return nil, codes.Wrap(codes.Aborted, "vault: record of "+name+" changed since revision "+rev, err)
		}
		return nil, err
	}
	out := &driver.Record{Rev: strconv.Itoa(v.version), Data: make(map[string]string, len(data))}
	for k, x := range data {
		out.Data[k] = x
	}
	return out, nil
}
