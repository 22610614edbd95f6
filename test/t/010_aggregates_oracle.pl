# Continuous aggregates against their defining queries (the oracle): random
# events, out of order by up to days (some land in the default partition and
# are moved by maintenance, which the consumer must not count twice), several
# event names, NULLs, numeric and jsonb-derived values, from concurrent
# pgbench sessions with rolled-back transactions.  After stream.flush the
# aggregate and its defining query are equal both ways, for a tumbling
# window with eight aggregate functions and a hopping window.
#
# Runs in both consumer modes: logical decoding, and the ingest queue when
# make test runs it again with STREAM_EVENTS_TEST_MODE=queue (StreamEventsTest.pm).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use StreamEventsTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = StreamEventsTest::new_node('agg_oracle', q{max_connections = 30});
# PostgreSQL 15.20+ restricts output plugins; allow ours where that exists.
$node->append_conf('postgresql.conf',
	"output_plugin_libraries = 'pgoutput, test_decoding, stream_events'")
  if `postgres --describe-config 2>/dev/null` =~ /^output_plugin_libraries/m;
$node->start;

$node->safe_psql('postgres', 'CREATE EXTENSION stream_events');
$node->safe_psql('postgres', q{SELECT stream.create_stream('clicks')});

my %query = (
	per_5min => q{
SELECT stream.tumble(occurred_at, '5 minutes') AS bucket, event_name,
       count(*) AS events, count(user_id) AS known,
       sum((properties->>'price')::numeric) AS revenue,
       avg((properties->>'qty')::int) AS avg_qty,
       min(user_id) AS first_user, max(occurred_at) AS last_seen,
       bool_and((properties->>'price')::numeric > 10) AS all_pricey,
       var_samp((properties->>'price')::numeric) AS price_var,
       count(*) FILTER (WHERE properties ? 'coupon') AS with_coupon
FROM clicks WHERE event_name <> 'noise'
GROUP BY 1, 2},
	hop_user => q{
SELECT w.window_start, user_id, count(*) AS events,
       sum((properties->>'price')::numeric) AS revenue, max(properties->>'qty') AS max_qty
FROM clicks CROSS JOIN LATERAL stream.hop(occurred_at, '30 minutes', '10 minutes') AS w(window_start)
GROUP BY 1, 2});

my $pgbench_script = q{
\set r random(1, 1000000000)
\set off random(-432000, 3600)
\set off2 random(-7200, 60)
BEGIN;
INSERT INTO clicks (event_name, occurred_at, user_id, properties) VALUES
  ((ARRAY['view','cart','buy','search','noise'])[1 + :r % 5],
   now() + (:off || ' seconds')::interval,
   CASE WHEN :r % 6 = 0 THEN NULL ELSE 'u' || (:r % 23) END,
   CASE WHEN :r % 11 = 0 THEN jsonb_build_object('qty', :r % 7, 'coupon', 'X')
        ELSE jsonb_build_object('price', round((:r % 100000) / 100.0, 2), 'qty', :r % 7) END),
  ('view', now() + (:off2 || ' seconds')::interval, 'u' || (:r % 5), '{}');
\if :r % 10 = 0
ROLLBACK;
\else
COMMIT;
\endif
};

my $runs = 0;

sub run_pgbench
{
	my ($clients, $xacts, $name) = @_;
	$runs++;
	$node->pgbench(
		"--no-vacuum --client=$clients --jobs=$clients --transactions=$xacts",
		0, [qr{processed: }], [qr{^$}], $name,
		{ "agg_events_$runs" => $pgbench_script });
}

sub oracle_equal
{
	my ($agg, $what) = @_;
	my $q = $query{$agg};
	my $missing = $node->safe_psql('postgres',
		"SELECT count(*) FROM (($q) EXCEPT ALL TABLE $agg) d");
	my $extra = $node->safe_psql('postgres',
		"SELECT count(*) FROM (TABLE $agg EXCEPT ALL ($q)) d");
	my $groups = $node->safe_psql('postgres', "SELECT count(*) FROM $agg");
	is("$missing/$extra", '0/0',
		"$what: $agg equals its defining query both ways ($groups groups)")
	  or diag(
		"rows of the defining query not in $agg (first 5):\n",
		$node->safe_psql('postgres', "SELECT * FROM (($q) EXCEPT ALL TABLE $agg) d LIMIT 5"),
		"\nrows of $agg not in the defining query (first 5):\n",
		$node->safe_psql('postgres', "SELECT * FROM (TABLE $agg EXCEPT ALL ($q)) d LIMIT 5"),
		"\nstream.aggregates:\n",
		$node->safe_psql('postgres',
			q{SELECT name, state, applied_lsn, events_applied, events_backfilled, last_error FROM stream.aggregates}));
}

# events before the aggregates exist are backfilled
run_pgbench(4, 250, 'events before the aggregates');
for my $agg (sort keys %query)
{
	$node->safe_psql('postgres',
		"SELECT stream.create_aggregate('$agg', \$q\$ $query{$agg} \$q\$)");
}
$node->safe_psql('postgres', q{SELECT stream.flush(timeout => '120 s')});
oracle_equal($_, 'after backfill') for sort keys %query;

# concurrent producers while the worker applies
run_pgbench(6, 800, 'concurrent producers');
$node->safe_psql('postgres', q{SELECT stream.maintain()});
$node->safe_psql('postgres', q{SELECT stream.flush(timeout => '120 s')});
oracle_equal($_, 'after concurrent ingest') for sort keys %query;

my $moved = $node->safe_psql('postgres',
	q{SELECT count(*) FROM clicks WHERE occurred_at < now() - interval '4 days'});
cmp_ok($moved, '>', 0, 'some events were older than the partitions kept behind (moved out of the default partition)');

# the worker's view of itself
is( $node->safe_psql(
		'postgres',
		q{SELECT string_agg(state || ':' || (last_error IS NULL)::text, ',' ORDER BY name::text)
		  FROM stream.aggregates}),
	'running:true,running:true',
	'both aggregates are running without error');
cmp_ok(
	$node->safe_psql('postgres',
		q{SELECT min(events_applied) FROM stream.aggregates}),
	'>', 0, 'events_applied is counted');

# one more round after a reload of the definitions (drop + recreate)
$node->safe_psql('postgres', q{SELECT stream.drop_aggregate('hop_user')});
$node->safe_psql('postgres',
	"SELECT stream.create_aggregate('hop_user', \$q\$ $query{hop_user} \$q\$)");
run_pgbench(3, 200, 'producers after recreate');
$node->safe_psql('postgres', q{SELECT stream.flush(timeout => '120 s')});
oracle_equal($_, 'after drop and recreate') for sort keys %query;

$node->stop;
done_testing();
