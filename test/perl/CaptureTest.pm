# CaptureTest: what the capture TAP tests (036_capture.pl, 037_capture_queue.pl)
# share: the pgbench script that changes a captured `tickets` table (insert or
# upsert, update of another row, sometimes a delete, some transactions rolled
# back), and crash rounds: pgbench (and optionally another command) running
# while the server is stopped with -m immediate, then started again.
#   my $script = CaptureTest::changes_script($node);
#   CaptureTest::crash_rounds($node, $script, 3, [ 'psql', ... ]);
package CaptureTest;

use strict;
use warnings;

use IPC::Run;
use Test::More;
use Time::HiRes qw(usleep);

sub changes_script
{
	my ($node) = @_;
	my $script = $node->basedir . '/capture_changes.sql';
	open my $fh, '>', $script or die "$script: $!";
	print $fh q{
\set id random(1000, 1400)
\set r random(1, 10)
BEGIN;
INSERT INTO tickets (id, user_id, priority) VALUES (:id, 'u' || :id % 7, 1 + :r) ON CONFLICT (id) DO UPDATE SET priority = excluded.priority, status = 'reopened';
UPDATE tickets SET body = 'b' || :r WHERE id = :id + 1;
\if :r = 1
DELETE FROM tickets WHERE id = :id;
\endif
\if :r = 2
ROLLBACK;
\else
COMMIT;
\endif
};
	close $fh;
	return $script;
}

# $rounds times: 4 pgbench clients for up to 8 s (and $extra, a command line,
# meanwhile), an immediate stop after 1 to 3.5 s, a start
sub crash_rounds
{
	my ($node, $script, $rounds, $extra) = @_;
	for my $round (1 .. $rounds)
	{
		my ($o, $e, $xo, $xe);
		my $h = IPC::Run::start(
			[
				'pgbench', '--no-vacuum', '--client=4', '--jobs=4', '--time=8',
				'--file=' . $script, '--host=' . $node->host,
				'--port=' . $node->port, 'postgres'
			],
			'>', \$o, '2>', \$e);
		my $x = $extra ? IPC::Run::start($extra, '>', \$xo, '2>', \$xe) : undef;
		usleep(1_000_000 + int(rand(2_500_000)));
		$node->stop('immediate');
		$h->finish;
		$x->finish if $x;
		$node->start;
		note("crash round $round");
	}
}

1;
