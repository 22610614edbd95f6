# SecurityTest: helpers for test/t/030_security.pl (the trust boundary):
# run SQL as a given role and read its SQLSTATE, assert that a statement is
# refused with a given SQLSTATE, and tell whether the server stayed up.
#
#   my $t = SecurityTest->new($node);
#   my ($ret, $out, $err) = $t->run('mallory', 'SELECT 1');
#   $t->refused('mallory', 'INSERT INTO stream.streams ...', '42501', 'forged row refused');
#   $t->succeeds('alice', 'SELECT stream.define_contract(...)', 'owner defines a contract');
package SecurityTest;

use strict;
use warnings;

use Test::More;
use PostgreSQL::Test::Utils;

sub new
{
	my ($class, $node) = @_;
	return bless { node => $node, log_offset => 0 }, $class;
}

# Runs $sql as $role (the bootstrap superuser when $role is 'postgres') in
# database $db; returns (exit code, stdout, stderr).  Errors carry their
# SQLSTATE (VERBOSITY verbose).  With $keep_going, psql continues after an
# error (ON_ERROR_STOP off), so later statements of a script still run.
sub run
{
	my ($self, $role, $sql, $db, $keep_going) = @_;
	$db //= 'postgres';
	my $node = $self->{node};
	my ($out, $err) = ('', '');
	my $ret = $node->psql(
		$db, "\\set VERBOSITY verbose\n$sql",
		connstr => $node->connstr($db) . ($role eq 'postgres' ? '' : " user=$role"),
		stdout => \$out,
		stderr => \$err,
		on_error_stop => $keep_going ? 0 : 1);
	return ($ret, $out, $err);
}

# The SQLSTATE of the first error in psql's stderr; 'ok' when there was none.
sub sqlstate
{
	my ($err) = @_;
	return 'ok' if !defined $err || $err !~ /ERROR/;
	return $1 if $err =~ /ERROR:\s+([0-9A-Z]{5}):/;
	return 'error-without-sqlstate';
}

# The first ERROR line (for diagnostics and the final report).
sub first_error
{
	my ($err) = @_;
	return '' unless defined $err;
	my ($line) = $err =~ /(ERROR:.*)/;
	return $line // (split /\n/, $err)[0] // '';
}

# Asserts that $sql, run as $role, fails with SQLSTATE $state.
sub refused
{
	my ($self, $role, $sql, $state, $name, $db) = @_;
	my ($ret, $out, $err) = $self->run($role, $sql, $db);
	my $got = $ret == 0 ? 'succeeded' : sqlstate($err);
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	is($got, $state, $name) or diag("as $role: $sql\n" . ($err || "(no error; output: $out)"));
	return $got eq $state;
}

# Asserts that $sql, run as $role, fails (any SQLSTATE but a crash).
sub refused_any
{
	my ($self, $role, $sql, $name, $db) = @_;
	my ($ret, $out, $err) = $self->run($role, $sql, $db);
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $state = $ret == 0 ? 'succeeded' : sqlstate($err);
	ok($state =~ /^[0-9A-Z]{5}$/ && $state !~ /^(08|57|58|XX)/, $name)
	  or diag("as $role: $sql\n" . ($err || "(no error; output: $out)"));
	return $state;
}

# Asserts that $sql, run as $role, succeeds; returns its output (undef on error).
sub succeeds
{
	my ($self, $role, $sql, $name, $db) = @_;
	my ($ret, $out, $err) = $self->run($role, $sql, $db);
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	is($ret == 0 ? 'ok' : sqlstate($err) . ' ' . first_error($err), 'ok', $name)
	  or diag("as $role: $sql\n$err");
	return $ret == 0 ? $out : undef;
}

# Output of $sql as $role, or undef when it failed (no test).
sub query
{
	my ($self, $role, $sql, $db) = @_;
	my ($ret, $out, $err) = $self->run($role, $sql, $db);
	if ($ret != 0)
	{
		note("query as $role failed: $sql\n$err");
		return undef;
	}
	return $out;
}

# Server health: the postmaster answers, and its log (since the last call of
# mark_log) shows no backend killed by a signal and no crash restart.
sub mark_log
{
	my ($self) = @_;
	$self->{log_offset} = -s $self->{node}->logfile;
}

sub crashes_in_log
{
	my ($self) = @_;
	my $log = slurp_file($self->{node}->logfile, $self->{log_offset});
	my @bad = grep { /terminated by signal|was terminated by exception|all server processes terminated|reinitializing|database system was interrupted|PANIC:/ }
	  split /\n/, $log;
	return join("\n", @bad);
}

1;
