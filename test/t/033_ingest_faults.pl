# Faults at the door (issue 15, items 11 and 12).
#
# 1. Dedup never deadlocks: five producers send the same 5,000 events at
#    the same time, each in another order and by another path (a multi-row
#    INSERT, COPY, stream.ingest, INSERTs of 500 in one explicit
#    transaction, and 5,000 autocommit single-row INSERT ... VALUES).  Before the stream's dedup lock (src/stream/dedup.c) about 45 of
#    such runs' producers died with 40P01; now none may fail, and each event
#    is stored exactly once.
# 2. The launcher: with max_worker_processes used up, a database whose worker
#    cannot start gets one WARNING a minute, not a flood, and
#    stream.worker_status() says why.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use StreamEventsTest;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $n = 5000;

# ---------------------------------------------------------------------------
# 1. five producers, five orders, four paths
# ---------------------------------------------------------------------------
my $node = StreamEventsTest::new_node('ingest_faults', q{max_connections = 20},
	q{deadlock_timeout = '100ms'});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION stream_events');

my $id = q{md5('ev' || g)::uuid};

# the ids in a fixed pseudo-random order, for COPY
my @shuffled = do
{
	my @ids = (1 .. $n);
	srand(33);
	for (my $i = $#ids; $i > 0; $i--)
	{
		my $j = int(rand($i + 1));
		@ids[ $i, $j ] = @ids[ $j, $i ];
	}
	@ids;
};

sub producer
{
	my ($sql, $stdin) = @_;
	my ($out, $err) = ('', '');
	# no SQL: the script is read from stdin
	my @cmd = (
		'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d',
		$node->connstr('postgres'), defined $sql ? ('-c', $sql) : ('-f', '-'));
	my $h = IPC::Run::start(\@cmd, '<', \$stdin, '>', \$out, '2>', \$err);
	return { h => $h, out => \$out, err => \$err, sql => $sql };
}

for my $round (1 .. 2)
{
	my $stream = "dd$round";
	$node->safe_psql('postgres', qq{SELECT stream.create_stream('$stream')});
	my $copy_data = '';
	my %uuid = split /\s+/, $node->safe_psql('postgres',
		qq{SELECT g, $id FROM generate_series(1, $n) g}, extra_params => [ '-A', '-F', ' ' ]);
	$copy_data .= "$uuid{$_}\tfrom_copy\n" foreach @shuffled;
	my $values = join('', map { "INSERT INTO $stream (event_id, event_name) VALUES ('$uuid{$_}', 'from_values');\n" }
		  reverse @shuffled);

	my @p = (
		# ascending, one multi-row INSERT
		producer(qq{INSERT INTO $stream (event_id, event_name)
		            SELECT $id, 'from_insert' FROM generate_series(1, $n) g ORDER BY g}, ''),
		# shuffled, COPY
		producer(qq{COPY $stream (event_id, event_name) FROM STDIN}, $copy_data),
		# descending, stream.ingest (Segment messageIds are the same uuids)
		producer(qq{SELECT * FROM stream.ingest('$stream',
		            (SELECT jsonb_agg(jsonb_build_object('event_id', $id, 'event_name', 'from_ingest')
		                              ORDER BY g DESC) FROM generate_series(1, $n) g))}, ''),
		# interleaved, ten INSERTs of 500 in one explicit transaction
		producer(qq{BEGIN;
		            SELECT count(*) FROM (SELECT 1) x;
		            DO \$\$ BEGIN
		              FOR k IN 0..9 LOOP
		                INSERT INTO $stream (event_id, event_name)
		                SELECT md5('ev' || g)::uuid, 'from_tx' FROM generate_series(1, $n) g
		                WHERE g % 10 = (7 * k + 3) % 10 ORDER BY g % 13, g;
		              END LOOP;
		            END \$\$;
		            COMMIT;}, ''),
		# the shuffled order reversed, one autocommit INSERT ... VALUES per
		# event (these take no dedup lock: src/stream/dedup.c)
		producer(undef, $values));

	my @failed;
	foreach my $p (@p)
	{
		$p->{h}->finish;
		push @failed, ${ $p->{err} } if $p->{h}->result != 0 || ${ $p->{err} } ne '';
	}
	is(scalar(@failed), 0, "round $round: no producer failed")
	  or diag(join("\n---\n", @failed));
	unlike(join('', @failed), qr/deadlock/, "round $round: no deadlock");
	is( $node->safe_psql('postgres',
			qq{SELECT count(*) || '/' || count(DISTINCT event_id) FROM $stream}),
		"$n/$n", "round $round: each of the $n events stored once");
	is( $node->safe_psql('postgres',
			qq{SELECT events || '/' || duplicates FROM stream.stats WHERE stream = '$stream'}),
		"$n/" . (4 * $n), "round $round: the other $n x 4 attempts counted as duplicates");
}

# the guarantee still holds: the second waits for the first, then drops its
# copy; a rolled-back first lets the second's copy in
{
	$node->safe_psql('postgres', q{SELECT stream.create_stream('dd_guard')});
	my $bg = $node->background_psql('postgres');
	$bg->query_safe(q{BEGIN});
	$bg->query_safe(q{INSERT INTO dd_guard (event_id, event_name) VALUES (md5('g1')::uuid, 'first')});
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[ 'psql', '-X', '-q', '-d', $node->connstr('postgres'), '-c',
		  q{INSERT INTO dd_guard (event_id, event_name) VALUES (md5('g1')::uuid, 'second')} ],
		'>', \$out, '2>', \$err);
	$node->poll_query_until('postgres',
		q{SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock'
		  AND query LIKE '%''second''%'})
	  or die 'the second producer does not wait';
	$bg->query_safe(q{ROLLBACK});
	$h->finish;
	is($node->safe_psql('postgres', q{SELECT string_agg(event_name, ',') FROM dd_guard}),
		'second', 'the first rolled back: the waiting second copy is stored');
	$bg->quit;
}

# A stream whose dedup key table is gone (dropped by hand) or has another
# index than its primary key: inserting into it and COPY fail with a clear
# error and store nothing; with the table given back, events go in again.
{
	$node->safe_psql('postgres', q{SELECT stream.create_stream('dd_keys')});
	my $sid = $node->safe_psql('postgres',
		q{SELECT stream_id FROM stream.streams WHERE relid = 'dd_keys'::regclass});
	my $insert = q{INSERT INTO dd_keys (event_name) VALUES ('view')};
	my $copy = q{COPY dd_keys (event_name) FROM PROGRAM 'echo view'};
	$node->safe_psql('postgres', "DROP TABLE stream.dedup_keys_$sid");
	for my $sql ($insert, $copy)
	{
		my ($ret, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\n$sql");
		like($err,
			qr/ERROR:  42P01: the dedup keys of stream "dd_keys" are missing\n.*DETAIL:  Table stream\.dedup_keys_$sid does not exist\.\n.*HINT:  Restore it from a dump of the database, or create it empty as the extension's owner: SELECT stream\._create_dedup_keys\($sid\)\./s,
			'a missing key table: ' . (split / /, $sql)[0] . ' fails with 42P01, naming the table and the way back');
	}
	$node->safe_psql('postgres', "SELECT stream._create_dedup_keys($sid)");
	$node->safe_psql('postgres', "CREATE INDEX dd_extra ON stream.dedup_keys_$sid (seen_at)");
	for my $sql ($insert, $copy)
	{
		my ($ret, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\n$sql");
		like($err,
			qr/ERROR:  55000: table stream\.dedup_keys_$sid must have exactly one index, its primary key\n.*DETAIL:  It has 2 indexes\.\n.*HINT:  As the extension's owner, leave stream\.dedup_keys_$sid its primary key on event_id and no other index\./s,
			'a key table with another index: ' . (split / /, $sql)[0] . ' fails with 55000');
	}
	$node->safe_psql('postgres', 'DROP INDEX stream.dd_extra');
	$node->safe_psql('postgres', "$insert; $copy");
	is($node->safe_psql('postgres',
			qq{SELECT (SELECT count(*) FROM dd_keys) || '/' || (SELECT count(*) FROM stream.dedup_keys_$sid)}),
		'2/2', 'the failed statements stored nothing; with the table given back, both went in with their keys');

	# pruning: a key older than the window (7 days) goes, a recent one stays;
	# the pruned event's retry is stored again, the other's is dropped
	$node->safe_psql('postgres', qq{
INSERT INTO dd_keys (event_id, event_name) VALUES (md5('old')::uuid, 'old'), (md5('new')::uuid, 'new');
UPDATE stream.dedup_keys_$sid SET seen_at = now() - interval '8 days' WHERE event_id = md5('old')::uuid;});
	is($node->safe_psql('postgres',
			q{SELECT dedup_keys_pruned FROM stream.maintain('dd_keys', prune => true)}),
		'1', 'stream.maintain prunes the one key older than the window');
	$node->safe_psql('postgres',
		q{INSERT INTO dd_keys (event_id, event_name) VALUES (md5('old')::uuid, 'old'), (md5('new')::uuid, 'new')});
	is($node->safe_psql('postgres',
			q{SELECT string_agg(event_name || '=' || n, ',' ORDER BY event_name)
			  FROM (SELECT event_name, count(*) AS n FROM dd_keys WHERE event_name IN ('old', 'new') GROUP BY 1) c}),
		'new=1,old=2', 'the pruned event is stored again, the recent one is still a duplicate');
}

$node->stop;

# ---------------------------------------------------------------------------
# 2. the launcher with max_worker_processes used up
# ---------------------------------------------------------------------------
my $tight = StreamEventsTest::new_node('no_room');
# the launcher takes the only background worker process: no worker can start
$tight->append_conf('postgresql.conf',
	"max_worker_processes = 1\nmax_logical_replication_workers = 0\n");
$tight->start;
$tight->safe_psql('postgres', 'CREATE EXTENSION stream_events');
$tight->safe_psql('postgres', "CREATE DATABASE $_") foreach qw(d1 d2 d3);
$tight->safe_psql($_, 'CREATE EXTENSION stream_events') foreach qw(d1 d2 d3);

my $log = $tight->logfile;
my $offset = -s $log;
sleep 6;
my $text = slurp_file($log, $offset);
my $warnings = () = $text =~ /WARNING:  stream_events could not start a worker for database/g;
cmp_ok($warnings, '<=', 4,
	"6 s without room for workers: at most one WARNING per database ($warnings)");
my $all = () = slurp_file($log) =~ /WARNING:  stream_events could not start a worker for database/g;
cmp_ok($all, '>=', 1, "the launcher did warn ($all WARNINGs since start)");
cmp_ok($all, '<=', 8, "never more than one per database per minute ($all for 4 databases)");
like($tight->safe_psql('postgres',
		q{SELECT string_agg(DISTINCT last_error, '; ') FROM stream.worker_status()
		  WHERE datname IN ('d1', 'd2', 'd3')}),
	qr/could not start: all 1 background worker processes \(max_worker_processes\) are in use/,
	'stream.worker_status() says why the workers do not run');
$tight->stop;

done_testing();
