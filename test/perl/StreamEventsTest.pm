# StreamEventsTest: the cluster every TAP test of stream_events starts from
# (PostgreSQL::Test::Cluster with the extension preloaded, logical decoding,
# room for the workers, and output_plugin_libraries where the server has
# that setting, 15.20+).  test/t/*.pl: my $node = StreamEventsTest::new_node('name', @extra_conf_lines);
#
# STREAM_EVENTS_TEST_MODE=queue runs the same test in queue mode: wal_level =
# replica and stream_events.consumer = 'queue' (the ingest queue instead of
# logical decoding, docs/queue-mode.md); StreamEventsTest::queue_mode() tells
# a test which mode it runs in.
package StreamEventsTest;

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use IPC::Run;
use Time::HiRes ();

my $has_plugin_libraries;

sub queue_mode
{
	return ($ENV{STREAM_EVENTS_TEST_MODE} // '') eq 'queue';
}

sub new_node
{
	my ($name, @extra) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(allows_streaming => queue_mode() ? 1 : 'logical');
	$node->append_conf('postgresql.conf', join("\n",
		q{shared_preload_libraries = 'stream_events'},
		queue_mode() ? (q{wal_level = replica}, q{stream_events.consumer = 'queue'})
		  : q{wal_level = logical},
		q{max_worker_processes = 32},
		q{max_replication_slots = 10},
		q{stream_events.naptime = 1},
		@extra) . "\n");
	$has_plugin_libraries //=
	  (`postgres --describe-config 2>/dev/null` =~ /^output_plugin_libraries/m) ? 1 : 0;
	$node->append_conf('postgresql.conf',
		"output_plugin_libraries = 'pgoutput, test_decoding, stream_events'")
	  if $has_plugin_libraries;
	return $node;
}

# poll_until($node, $db, $query, $expected, $seconds): runs $query every
# 20 ms until it returns $expected or $seconds (default 60) pass; returns
# what it got last.
sub poll_until
{
	my ($node, $db, $query, $expected, $seconds) = @_;
	my $got;
	my $until = Time::HiRes::time() + ($seconds // 60);
	while (Time::HiRes::time() < $until)
	{
		$got = $node->safe_psql($db, $query);
		return $got if $got eq $expected;
		Time::HiRes::usleep(20_000);
	}
	return $got;
}

# A LISTEN client: listener($node, $role, @channels) starts psql on the
# node's postgres database (as $role; undef: the default user) listening on
# @channels; notifications($l, $channel) returns the payloads received so
# far on the channels $channel (a regular expression) matches, in order;
# close_listener($l) ends it.  psql prints notifications after each
# command it runs, so notifications() runs one (a short sleep first).
sub listener
{
	my ($node, $role, @channels) = @_;
	my $l = { in => '', out => '', err => '', n => 0 };
	$l->{h} = IPC::Run::start(
		[ 'psql', '-X', '-A', '-t', '-d',
		  $node->connstr('postgres') . (defined $role ? " user=$role" : '') ],
		'<', \$l->{in}, '>', \$l->{out}, '2>', \$l->{err},
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	$l->{in} .= join('', map { "LISTEN $_;\n" } @channels) . "SELECT 'listening';\n";
	$l->{h}->pump until $l->{out} =~ /listening/;
	return $l;
}

sub notifications
{
	my ($l, $channel) = @_;
	$l->{n}++;
	$l->{in} .= "SELECT pg_sleep(0.2);\nSELECT 'done$l->{n}';\n";
	$l->{h}->pump until $l->{out} =~ /done$l->{n}/;
	return ($l->{out} =~ /Asynchronous notification "$channel" with payload "(.*?)" received/g);
}

sub close_listener
{
	my ($l) = @_;
	$l->{in} .= "\\q\n";
	$l->{h}->finish;
	return;
}

1;
