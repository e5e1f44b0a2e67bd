package rewrite

import (
	"context"
	"testing"
)

// BenchmarkRewriteCacheHit measures the path every repeated Fetchq call
// takes: a cache lookup, no parse.
func BenchmarkRewriteCacheHit(b *testing.B) {
	ctx := context.Background()
	r := New(1024)
	sql := "SELECT * FROM fetchq.doc_pick( 'q1', 0, 1, '5m' )"
	if _, err := r.Rewrite(ctx, sql); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := r.Rewrite(ctx, sql); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRewritePrefilter measures the path of every statement that
// does not mention fetchq.
func BenchmarkRewritePrefilter(b *testing.B) {
	ctx := context.Background()
	r := New(1024)
	sql := "SELECT id, name, email FROM users WHERE id = $1 AND deleted_at IS NULL ORDER BY created_at DESC LIMIT 10"
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := r.Rewrite(ctx, sql); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRewriteMiss measures a parse and classification (no cache).
func BenchmarkRewriteMiss(b *testing.B) {
	ctx := context.Background()
	r := New(0)
	sql := `SELECT * FROM fetchq.doc_push( 'q1', 's1', 0, 0, NOW() + INTERVAL '1 hour', '{"a":1}' )`
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := r.Rewrite(ctx, sql); err != nil {
			b.Fatal(err)
		}
	}
}
