#!/usr/bin/env perl
# Runs the JSON-Schema-Test-Suite (draft 2020-12) against stream_events'
# validator through psql.
#
# Needs a running server reachable with the libpq environment (PGHOST,
# PGPORT, PGDATABASE, PGUSER) where CREATE EXTENSION stream_events has been
# done.  The suite is ../shared/json-schema-test-suite from the repository
# root unless JSON_SCHEMA_SUITE says otherwise.  Every file of remotes/ is
# registered under http://localhost:1234/<path> with stream.register_schema.
#
# One SQL script holds every case; each test runs in a PL/pgSQL wrapper
# that turns an error into a result, so one psql run does the whole suite.
# Prints "jsonschema draft2020-12: N passed, M failed" (plus the number of
# listed unsupported cases) and every failure; optional/format, when the
# suite has it, runs with stream_events.format_assertion = on and is
# reported on its own line.  Exit status 1 if any required test failed (the
# optional format tests are reported, not counted in the exit status).
use strict;
use warnings;
use File::Basename qw(dirname);
use File::Find;
use File::Spec;
use File::Temp qw(tempfile);
use JSON::PP;

my $here  = dirname(File::Spec->rel2abs(__FILE__));
my $root  = File::Spec->catdir($here, '..', '..');
my $suite = $ENV{JSON_SCHEMA_SUITE}
  // File::Spec->catdir($root, '..', 'shared', 'json-schema-test-suite');
my $draft = 'draft2020-12';
my $tests_dir = "$suite/tests/$draft";
die "jsonschema.pl: no test suite at $tests_dir (set JSON_SCHEMA_SUITE)\n"
  unless -d $tests_dir;

# allow_bignum keeps numbers exact (9007199254740992.0 is not a double's 9.00719925474099e+15)
my $json = JSON::PP->new->utf8->canonical->allow_nonref->allow_bignum;

# unsupported.txt: file <TAB> group description <TAB> test description or * <TAB> reason
my %unsupported;
if (open my $fh, '<:encoding(UTF-8)', "$here/unsupported.txt") {
	while (my $line = <$fh>) {
		chomp $line;
		next if $line =~ /^\s*(#|$)/;
		my ($file, $group, $test, $reason) = split /\t/, $line, 4;
		die "unsupported.txt: malformed line: $line\n" unless defined $reason;
		$unsupported{"$file\t$group\t$test"} = $reason;
	}
	close $fh;
}

# $file is relative to tests/draft2020-12 (optional/format/x.json for the format tests)
sub unsupported_reason {
	my ($file, $group, $test) = @_;
	return $unsupported{"$file\t$group\t$test"} // $unsupported{"$file\t$group\t*"}
	  // $unsupported{"$file\t*\t*"};
}

# a dollar-quoted literal whose tag does not occur in the text
sub dq {
	my ($text) = @_;
	my $n = 0;
	$n++ while index($text, "\$j$n\$") >= 0;
	return "\$j$n\$$text\$j$n\$";
}

sub read_json_file {
	my ($path) = @_;
	open my $fh, '<:raw', $path or die "$path: $!\n";
	local $/;
	my $text = <$fh>;
	close $fh;
	return $text;
}

my @sql = (
	"\\set ON_ERROR_STOP 1",
	"SET client_encoding = 'UTF8';",
	"SET client_min_messages = warning;",
	"CREATE FUNCTION pg_temp.js_try(s text, d text) RETURNS text LANGUAGE plpgsql AS \$f\$\n"
	  . "BEGIN\n  RETURN stream.json_schema_validate(s::jsonb, d::jsonb)::text;\n"
	  . "EXCEPTION WHEN OTHERS THEN\n  RETURN 'error: ' || replace(SQLERRM, E'\\n', ' ');\nEND\n\$f\$;",
);

# remotes
my $remotes = "$suite/remotes";
my @remote_files;
find({ no_chdir => 1, wanted => sub { push @remote_files, $_ if -f $_ && /\.json$/ } }, $remotes);
for my $path (sort @remote_files) {
	my $rel = File::Spec->abs2rel($path, $remotes);
	my $text = read_json_file($path);
	push @sql, "SELECT stream.register_schema(" . dq("http://localhost:1234/$rel") . ", "
	  . dq($text) . "::jsonb);";
}

my @cases;    # [section, file, group, test, expected]

sub add_file {
	my ($section, $dir, $file) = @_;
	my $groups = $json->decode(read_json_file("$dir/$file"));
	for my $g (@$groups) {
		my $schema_text = $json->encode($g->{schema});
		for my $t (@{ $g->{tests} }) {
			my $id = scalar @cases;
			push @cases, [ $section, $file, $g->{description}, $t->{description},
				$t->{valid} ? 'true' : 'false' ];
			push @sql, "SELECT 'R|$id|' || pg_temp.js_try(" . dq($schema_text) . ", "
			  . dq($json->encode($t->{data})) . ");";
		}
	}
}

opendir my $dh, $tests_dir or die "$tests_dir: $!\n";
my @files = sort grep { /\.json$/ && -f "$tests_dir/$_" } readdir $dh;
closedir $dh;
add_file('required', $tests_dir, $_) for @files;

my $format_dir = "$tests_dir/optional/format";
if (-d $format_dir) {
	opendir my $fd, $format_dir or die "$format_dir: $!\n";
	my @ffiles = sort grep { /\.json$/ } readdir $fd;
	closedir $fd;
	push @sql, "SET stream_events.format_assertion = on;";
	add_file('optional/format', $format_dir, $_) for @ffiles;
	push @sql, "RESET stream_events.format_assertion;";
}

# the registry is left as the suite found it: remove what we registered
push @sql, "DELETE FROM stream.schemas WHERE uri LIKE 'http://localhost:1234/%';";

my ($sfh, $script) = tempfile('jsonschema-XXXXXX', SUFFIX => '.sql', TMPDIR => 1, UNLINK => 1);
binmode $sfh;
print $sfh join("\n", @sql), "\n";
close $sfh;

open my $psql, '-|', 'psql', '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-f', $script
  or die "cannot run psql: $!\n";
my %result;
while (my $line = <$psql>) {
	chomp $line;
	$result{$1} = $2 if $line =~ /^R\|(\d+)\|(.*)$/;
}
close $psql;
die "jsonschema.pl: psql failed (exit status " . ($? >> 8) . ")\n" if $?;

my %count;
my @failures;
for my $id (0 .. $#cases) {
	my ($section, $file, $group, $test, $expected) = @{ $cases[$id] };
	my $got = $result{$id} // 'no result';
	my $reason = unsupported_reason($section eq 'required' ? $file : "$section/$file", $group, $test);
	my $c = $count{$section} //= { passed => 0, failed => 0, unsupported => 0 };
	if (defined $reason) {
		$c->{unsupported}++;
		push @failures, "  unsupported (listed: $reason): $section/$file | $group | $test => $got";
	}
	elsif ($got eq $expected) {
		$c->{passed}++;
	}
	else {
		$c->{failed}++;
		push @failures, "  FAILED: $section/$file | $group | $test: expected $expected, got $got";
	}
}

print "$_\n" for @failures;
my $failed = 0;
for my $section ('required', 'optional/format') {
	my $c = $count{$section} or next;
	my $label = $section eq 'required' ? "jsonschema $draft" : "jsonschema $draft $section";
	printf "%s: %d passed, %d failed, %d unsupported (listed)\n", $label, $c->{passed},
	  $c->{failed}, $c->{unsupported};
	# the optional format tests are reported, but only required ones decide
	$failed += $c->{failed} if $section eq 'required';
}
print "jsonschema $draft optional/format: not in this copy of the suite\n"
  unless -d $format_dir;
exit($failed ? 1 : 0);
