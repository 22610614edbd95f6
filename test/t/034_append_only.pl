# Append-only at the DDL level and the partition bound (src/stream/ddl_guard.c,
# stream.maintain in sql/modules/10_streams.sql), with the worker running:
# a dropped default partition is refused and inserts go on, retention still
# drops old partitions, stream.drop_stream / DROP SCHEMA ... CASCADE /
# DROP OWNED drop whole streams, far-future and far-past events stay in the
# default partition and are counted, and 4 producers keep inserting across
# partition creations (their p99 latency is reported, not asserted).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use StreamEventsTest;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use File::Temp qw(tempdir);

my $node = StreamEventsTest::new_node('append_only', q{max_connections = 30});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION stream_events');

sub refused
{
	my ($sql, $re, $what) = @_;
	my ($out, $err) = ('', '');
	my $ret = $node->psql('postgres', $sql, stdout => \$out, stderr => \$err,
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	isnt($ret, 0, "$what: refused");
	like($err, $re, "$what: the error says why");
	return $err;
}

############################################################################
# (a) The default partition cannot be dropped; events stay, inserts go on.

$node->safe_psql('postgres', q{SELECT stream.create_stream('clicks')});
$node->safe_psql('postgres', q{
	INSERT INTO clicks (event_name, occurred_at) VALUES ('early', '2999-01-01'), ('now', now())});
my $err = refused('DROP TABLE clicks_default',
	qr/0A000: cannot drop partition "clicks_default" of stream "clicks".*DETAIL:.*clicks.*HINT:.*stream\.drop_stream/s,
	'DROP TABLE clicks_default by the owner');
is($node->safe_psql('postgres', q{SELECT count(*) FROM clicks_default}), '1',
	'the event of the default partition is still there');
refused(q{ALTER TABLE clicks DETACH PARTITION clicks_default},
	qr/0A000: cannot detach partition "clicks_default" from stream "clicks"/, 'DETACH of the default partition');
refused(q{TRUNCATE clicks_default}, qr/TRUNCATE is not allowed on stream "clicks"/, 'TRUNCATE of the default partition');
refused(q{ALTER TABLE clicks DROP COLUMN session_id},
	qr/cannot drop column "session_id" of stream "clicks"/, 'DROP COLUMN of an envelope column');
$node->safe_psql('postgres', q{INSERT INTO clicks (event_name, occurred_at) VALUES ('early', '2998-01-01')});
is($node->safe_psql('postgres', q{SELECT count(*) FROM clicks}), '3',
	'an event outside every partition is still accepted afterwards');

############################################################################
# (b) Retention still drops old partitions (the worker's stream.maintain).

$node->safe_psql('postgres', q{
	SELECT stream.create_stream('short_lived');
	INSERT INTO short_lived (event_name, occurred_at) VALUES
	  ('old', now() - interval '40 days'), ('recent', now() - interval '1 day');
	SELECT * FROM stream.maintain('short_lived');
	UPDATE stream.streams SET retention = '30 days' WHERE relid = 'short_lived'::regclass});
my $old_part = $node->safe_psql('postgres',
	q{SELECT tableoid::regclass FROM short_lived WHERE event_name = 'old'});
like($old_part, qr/^short_lived_p\d{8}$/, "the old event has a partition of its own ($old_part)");
refused("DROP TABLE $old_part", qr/cannot drop partition/, 'DROP TABLE of an expired partition by hand');
ok($node->poll_query_until('postgres', qq{SELECT to_regclass('$old_part') IS NULL}),
	'the worker drops the partition past retention');
is($node->safe_psql('postgres', q{SELECT string_agg(event_name, ',') FROM short_lived}), 'recent',
	'events within retention are kept');

############################################################################
# (c) Whole streams: stream.drop_stream, DROP SCHEMA ... CASCADE, DROP OWNED.

$node->safe_psql('postgres', q{
	SELECT stream.create_stream('gone1');
	CREATE SCHEMA s2;
	SELECT stream.create_stream('s2.gone2');
	CREATE ROLE r3;
	GRANT USAGE ON SCHEMA stream TO r3;
	CREATE SCHEMA s3 AUTHORIZATION r3;
	SET ROLE r3;
	SELECT stream.create_stream('s3.gone3');
	RESET ROLE;
	INSERT INTO gone1 (event_name) VALUES ('x');
	INSERT INTO s2.gone2 (event_name) VALUES ('x');
	INSERT INTO s3.gone3 (event_name) VALUES ('x')});
is($node->psql('postgres', q{SELECT stream.drop_stream('gone1')}), 0, 'stream.drop_stream works');
is($node->psql('postgres', q{DROP SCHEMA s2 CASCADE}), 0, 'DROP SCHEMA ... CASCADE of a stream works');
is($node->psql('postgres', q{DROP OWNED BY r3}), 0, 'DROP OWNED of a stream works');
is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM stream.streams WHERE relid::text ~ 'gone'}
		  . q{ UNION ALL SELECT count(*) FROM pg_class WHERE relname ~ '^gone[123]'}),
	"0\n0", 'no catalog row and no table left');

############################################################################
# (d) The bound: random far-future and far-past events stay in the default
# partition, counted; the worker does not create a partition for each.

$node->safe_psql('postgres', q{
	SELECT stream.create_stream('noisy');
	INSERT INTO noisy (event_name, occurred_at)
	SELECT 'future', timestamptz '2100-01-01' + random() * interval '800 years'
	FROM generate_series(1, 1000);
	INSERT INTO noisy (event_name, occurred_at)
	SELECT 'past', timestamptz '1000-01-01' + random() * interval '900 years'
	FROM generate_series(1, 1000)});
my $parts_sql = q{SELECT count(*) FROM pg_inherits WHERE inhparent = 'noisy'::regclass};
my $parts = $node->safe_psql('postgres', $parts_sql);
# a few worker runs (naptime 1 s)
my $runs_sql = q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'stream_events worker'};
ok($node->poll_query_until('postgres', $runs_sql, '1'), 'the worker runs');
sleep 4;
is($node->safe_psql('postgres', $parts_sql), $parts, "no partition created for them ($parts partitions)");
is( $node->safe_psql('postgres',
		q{SELECT default_partition_events FROM stream.stream_list WHERE stream = 'noisy'}),
	'2000', 'stream.stream_list counts the 2000 events of the default partition');
is($node->safe_psql('postgres', q{SELECT count(*) FROM noisy}), '2000', 'and they are visible in the stream');
# within the bound, late events get partitions, a few per run
$node->safe_psql('postgres', q{
	INSERT INTO noisy (event_name, occurred_at)
	SELECT 'late', now() - make_interval(days => d) FROM generate_series(10, 49) d});
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM noisy_default WHERE event_name = 'late'}),
	'late events within stream_events.max_partitions_behind are adopted by the worker');
is($node->safe_psql('postgres', $parts_sql), $parts + 40, 'one partition per late day');

############################################################################
# (e) 4 producers across partition creations, with a fifth producer whose
# transactions last 300 ms: p99 latency of the 4 before (the
# stream locked IN SHARE MODE around each creation, as _ensure_partition
# did) and after (partitions ahead attached under the default partition's
# lock only; late events adopted with the move outside the lock).

$node->safe_psql('postgres', q{ALTER SYSTEM SET stream_events.naptime = 3600; SELECT pg_reload_conf()});
$node->safe_psql('postgres', q{SELECT stream.create_stream('bench', dedup_window => NULL)});
my $dir = tempdir(CLEANUP => 1);
open my $fh, '>', "$dir/insert.sql" or die;
print $fh "INSERT INTO bench (event_name, user_id, properties) VALUES ('tick', 'u' || :client_id, '{\"n\": 1}');\n";
close $fh;
# a fifth producer writes in transactions that last 300 ms (a batch
# producer): a lock request that conflicts with its ROW EXCLUSIVE waits for
# it, and every producer queues behind that request
open $fh, '>', "$dir/slow.sql" or die;
print $fh "BEGIN;\nINSERT INTO bench (event_name, user_id) VALUES ('batch', 'slow');\nSELECT pg_sleep(0.3);\nEND;\n";
close $fh;

my $seconds = 8;

sub p99_across
{
	my ($label, $creator_sql) = @_;
	my $prefix = "$dir/$label";
	my ($cout, $cerr) = ('', '');
	my $creator = IPC::Run::start(
		[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'), '-c', $creator_sql ],
		'>', \$cout, '2>', \$cerr);
	my ($sout, $serr) = ('', '');
	my $slow = IPC::Run::start(
		[ 'pgbench', '-n', '-c', '1', '-T', $seconds, '-f', "$dir/slow.sql", '-d', $node->connstr('postgres') ],
		'>', \$sout, '2>', \$serr);
	my ($bout, $berr) = ('', '');
	my $ok = IPC::Run::run(
		[ 'pgbench', '-n', '-c', '4', '-j', '4', '-T', $seconds, '-f', "$dir/insert.sql",
		  '-l', "--log-prefix=$prefix", '-d', $node->connstr('postgres') ],
		'>', \$bout, '2>', \$berr);
	my $created = $creator->finish;
	my $slow_ok = $slow->finish;
	ok($ok && $slow_ok, "$label: 4 producers (and a slow one) ran for ${seconds}s without a failed insert")
	  or diag($berr . $serr);
	ok($created, "$label: partitions were created meanwhile") or diag($cerr);
	my @lat;
	for my $f (glob("$prefix.*"))
	{
		open my $lf, '<', $f or die;
		while (<$lf>) { my @c = split; push @lat, $c[2] if @c >= 3; }
		close $lf;
		unlink $f;
	}
	@lat = sort { $a <=> $b } @lat;
	my $n = scalar @lat;
	return (0, 0, 0, 0, 0, 0) unless $n;
	my $p = sub { $lat[ int($_[0] * ($n - 1)) ] / 1000.0 };
	my $slow_inserts = grep { $_ > 50_000 } @lat;
	return ($n, $p->(0.5), $p->(0.99), $p->(0.999), $lat[-1] / 1000.0, $slow_inserts);
}

# each iteration creates one partition ahead, then sleeps 20 ms, for as
# long as the producers run
my $ahead_loop = q{
DO $$
DECLARE
  t0 timestamptz := clock_timestamp();
BEGIN
  FOR k IN 4 .. 1000 LOOP
    EXIT WHEN clock_timestamp() > t0 + interval '%d seconds';
    PERFORM set_config('stream_events.partitions_ahead', k::text, false);
    %s
    PERFORM * FROM stream.maintain('bench');
    COMMIT;
    PERFORM pg_sleep(0.02);
  END LOOP;
END $$};
my %r;
$r{none} = [ p99_across('none', q{SELECT 1}) ];
$r{before} = [ p99_across('before', sprintf($ahead_loop, $seconds, q{LOCK TABLE bench IN SHARE MODE;})) ];
$node->safe_psql('postgres', q{SELECT stream.drop_stream('bench');
	SELECT stream.create_stream('bench', dedup_window => NULL)});
$r{after} = [ p99_across('after', sprintf($ahead_loop, $seconds, '')) ];
# late events, 200 per day for 60 days, adopted one partition per maintain
$node->safe_psql('postgres', q{
	INSERT INTO bench (event_name, occurred_at)
	SELECT 'late', now() - make_interval(days => 5 + d, mins => i)
	FROM generate_series(1, 60) d, generate_series(1, 200) i});
$r{adopt} = [ p99_across('adopt', q{
DO $$
BEGIN
  FOR k IN 1 .. 70 LOOP
    PERFORM set_config('stream_events.max_partitions_per_run', '1', false);
    PERFORM * FROM stream.maintain('bench');
    COMMIT;
    PERFORM pg_sleep(0.02);
  END LOOP;
END $$}) ];
is($node->safe_psql('postgres', q{SELECT count(*) FROM bench_default WHERE event_name = 'late'}), '0',
	'every late event was adopted while the producers ran');

for my $k (qw(none before after adopt))
{
	my ($n, $p50, $p99, $p999, $max, $over50) = @{ $r{$k} };
	my $line = sprintf('producer latency, %-6s: %d inserts in %ds, p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms, %d over 50 ms',
		$k, $n, $seconds, $p50, $p99, $p999, $max, $over50);
	diag($line);
}

$node->stop;
done_testing();
