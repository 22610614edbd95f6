/*-------------------------------------------------------------------------
 * meta.c
 *	  The JSON Schema draft 2020-12 meta-schema and its vocabulary
 *	  meta-schemas, built in so that "$schema" and "$ref" to them work
 *	  offline (they are not in the user-visible registry, stream.schemas).
 *
 * The texts are the published documents of json-schema.org, minified.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "jsonschema/internal.h"

static const struct
{
	const char *uri;
	const char *text;
}			builtin_schemas[] =
{
	{"https://json-schema.org/draft/2020-12/schema",
		"{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"$id\":"
		"\"https://json-schema.org/draft/2020-12/schema\",\"$vocabulary\":{\"ht"
		"tps://json-schema.org/draft/2020-12/vocab/core\":true,\"https://json-s"
		"chema.org/draft/2020-12/vocab/applicator\":true,\"https://json-schema."
		"org/draft/2020-12/vocab/unevaluated\":true,\"https://json-schema.org/d"
		"raft/2020-12/vocab/validation\":true,\"https://json-schema.org/draft/2"
		"020-12/vocab/meta-data\":true,\"https://json-schema.org/draft/2020-12/"
		"vocab/format-annotation\":true,\"https://json-schema.org/draft/2020-12"
		"/vocab/content\":true},\"$dynamicAnchor\":\"meta\",\"title\":\"Core an"
		"d Validation specifications meta-schema\",\"allOf\":[{\"$ref\":\"meta/"
		"core\"},{\"$ref\":\"meta/applicator\"},{\"$ref\":\"meta/unevaluated\"}"
		",{\"$ref\":\"meta/validation\"},{\"$ref\":\"meta/meta-data\"},{\"$ref\""
		":\"meta/format-annotation\"},{\"$ref\":\"meta/content\"}],\"type\":[\""
		"object\",\"boolean\"],\"$comment\":\"This meta-schema also defines key"
		"words that have appeared in previous drafts in order to prevent incomp"
		"atible extensions as they remain in common use.\",\"properties\":{\"de"
		"finitions\":{\"$comment\":\"\\\"definitions\\\" has been replaced by \\\""
		"$defs\\\".\",\"type\":\"object\",\"additionalProperties\":{\"$dynamicR"
		"ef\":\"#meta\"},\"deprecated\":true,\"default\":{}},\"dependencies\":{"
		"\"$comment\":\"\\\"dependencies\\\" has been split and replaced by \\\""
		"dependentSchemas\\\" and \\\"dependentRequired\\\" in order to serve t"
		"heir differing semantics.\",\"type\":\"object\",\"additionalProperties"
		"\":{\"anyOf\":[{\"$dynamicRef\":\"#meta\"},{\"$ref\":\"meta/validation"
		"#/$defs/stringArray\"}]},\"deprecated\":true,\"default\":{}},\"$recurs"
		"iveAnchor\":{\"$comment\":\"\\\"$recursiveAnchor\\\" has been replaced"
		" by \\\"$dynamicAnchor\\\".\",\"$ref\":\"meta/core#/$defs/anchorString"
		"\",\"deprecated\":true},\"$recursiveRef\":{\"$comment\":\"\\\"$recursi"
		"veRef\\\" has been replaced by \\\"$dynamicRef\\\".\",\"$ref\":\"meta/"
		"core#/$defs/uriReferenceString\",\"deprecated\":true}}}"},
	{"https://json-schema.org/draft/2020-12/meta/core",
		"{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"$id\":"
		"\"https://json-schema.org/draft/2020-12/meta/core\",\"$vocabulary\":{\""
		"https://json-schema.org/draft/2020-12/vocab/core\":true},\"$dynamicAnc"
		"hor\":\"meta\",\"title\":\"Core vocabulary meta-schema\",\"type\":[\"o"
		"bject\",\"boolean\"],\"properties\":{\"$id\":{\"$ref\":\"#/$defs/uriRe"
		"ferenceString\",\"$comment\":\"Non-empty fragments not allowed.\",\"pa"
		"ttern\":\"^[^#]*#?$\"},\"$schema\":{\"$ref\":\"#/$defs/uriString\"},\""
		"$ref\":{\"$ref\":\"#/$defs/uriReferenceString\"},\"$anchor\":{\"$ref\""
		":\"#/$defs/anchorString\"},\"$dynamicRef\":{\"$ref\":\"#/$defs/uriRefe"
		"renceString\"},\"$dynamicAnchor\":{\"$ref\":\"#/$defs/anchorString\"},"
		"\"$vocabulary\":{\"type\":\"object\",\"propertyNames\":{\"$ref\":\"#/$"
		"defs/uriString\"},\"additionalProperties\":{\"type\":\"boolean\"}},\"$"
		"comment\":{\"type\":\"string\"},\"$defs\":{\"type\":\"object\",\"addit"
		"ionalProperties\":{\"$dynamicRef\":\"#meta\"}}},\"$defs\":{\"anchorStr"
		"ing\":{\"type\":\"string\",\"pattern\":\"^[A-Za-z_][-A-Za-z0-9._]*$\"}"
		",\"uriString\":{\"type\":\"string\",\"format\":\"uri\"},\"uriReference"
		"String\":{\"type\":\"string\",\"format\":\"uri-reference\"}}}"},
	{"https://json-schema.org/draft/2020-12/meta/applicator",
		"{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"$id\":"
		"\"https://json-schema.org/draft/2020-12/meta/applicator\",\"$vocabular"
		"y\":{\"https://json-schema.org/draft/2020-12/vocab/applicator\":true},"
		"\"$dynamicAnchor\":\"meta\",\"title\":\"Applicator vocabulary meta-sch"
		"ema\",\"type\":[\"object\",\"boolean\"],\"properties\":{\"prefixItems\""
		":{\"$ref\":\"#/$defs/schemaArray\"},\"items\":{\"$dynamicRef\":\"#meta"
		"\"},\"contains\":{\"$dynamicRef\":\"#meta\"},\"additionalProperties\":"
		"{\"$dynamicRef\":\"#meta\"},\"properties\":{\"type\":\"object\",\"addi"
		"tionalProperties\":{\"$dynamicRef\":\"#meta\"},\"default\":{}},\"patte"
		"rnProperties\":{\"type\":\"object\",\"additionalProperties\":{\"$dynam"
		"icRef\":\"#meta\"},\"propertyNames\":{\"format\":\"regex\"},\"default\""
		":{}},\"dependentSchemas\":{\"type\":\"object\",\"additionalProperties\""
		":{\"$dynamicRef\":\"#meta\"},\"default\":{}},\"propertyNames\":{\"$dyn"
		"amicRef\":\"#meta\"},\"if\":{\"$dynamicRef\":\"#meta\"},\"then\":{\"$d"
		"ynamicRef\":\"#meta\"},\"else\":{\"$dynamicRef\":\"#meta\"},\"allOf\":"
		"{\"$ref\":\"#/$defs/schemaArray\"},\"anyOf\":{\"$ref\":\"#/$defs/schem"
		"aArray\"},\"oneOf\":{\"$ref\":\"#/$defs/schemaArray\"},\"not\":{\"$dyn"
		"amicRef\":\"#meta\"}},\"$defs\":{\"schemaArray\":{\"type\":\"array\",\""
		"minItems\":1,\"items\":{\"$dynamicRef\":\"#meta\"}}}}"},
	{"https://json-schema.org/draft/2020-12/meta/unevaluated",
		"{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"$id\":"
		"\"https://json-schema.org/draft/2020-12/meta/unevaluated\",\"$vocabula"
		"ry\":{\"https://json-schema.org/draft/2020-12/vocab/unevaluated\":true"
		"},\"$dynamicAnchor\":\"meta\",\"title\":\"Unevaluated applicator vocab"
		"ulary meta-schema\",\"type\":[\"object\",\"boolean\"],\"properties\":{"
		"\"unevaluatedItems\":{\"$dynamicRef\":\"#meta\"},\"unevaluatedProperti"
		"es\":{\"$dynamicRef\":\"#meta\"}}}"},
	{"https://json-schema.org/draft/2020-12/meta/validation",
		"{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"$id\":"
		"\"https://json-schema.org/draft/2020-12/meta/validation\",\"$vocabular"
		"y\":{\"https://json-schema.org/draft/2020-12/vocab/validation\":true},"
		"\"$dynamicAnchor\":\"meta\",\"title\":\"Validation vocabulary meta-sch"
		"ema\",\"type\":[\"object\",\"boolean\"],\"properties\":{\"type\":{\"an"
		"yOf\":[{\"$ref\":\"#/$defs/simpleTypes\"},{\"type\":\"array\",\"items\""
		":{\"$ref\":\"#/$defs/simpleTypes\"},\"minItems\":1,\"uniqueItems\":tru"
		"e}]},\"const\":true,\"enum\":{\"type\":\"array\",\"items\":true},\"mul"
		"tipleOf\":{\"type\":\"number\",\"exclusiveMinimum\":0},\"maximum\":{\""
		"type\":\"number\"},\"exclusiveMaximum\":{\"type\":\"number\"},\"minimu"
		"m\":{\"type\":\"number\"},\"exclusiveMinimum\":{\"type\":\"number\"},\""
		"maxLength\":{\"$ref\":\"#/$defs/nonNegativeInteger\"},\"minLength\":{\""
		"$ref\":\"#/$defs/nonNegativeIntegerDefault0\"},\"pattern\":{\"type\":\""
		"string\",\"format\":\"regex\"},\"maxItems\":{\"$ref\":\"#/$defs/nonNeg"
		"ativeInteger\"},\"minItems\":{\"$ref\":\"#/$defs/nonNegativeIntegerDef"
		"ault0\"},\"uniqueItems\":{\"type\":\"boolean\",\"default\":false},\"ma"
		"xContains\":{\"$ref\":\"#/$defs/nonNegativeInteger\"},\"minContains\":"
		"{\"$ref\":\"#/$defs/nonNegativeInteger\",\"default\":1},\"maxPropertie"
		"s\":{\"$ref\":\"#/$defs/nonNegativeInteger\"},\"minProperties\":{\"$re"
		"f\":\"#/$defs/nonNegativeIntegerDefault0\"},\"required\":{\"$ref\":\"#"
		"/$defs/stringArray\"},\"dependentRequired\":{\"type\":\"object\",\"add"
		"itionalProperties\":{\"$ref\":\"#/$defs/stringArray\"}}},\"$defs\":{\""
		"nonNegativeInteger\":{\"type\":\"integer\",\"minimum\":0},\"nonNegativ"
		"eIntegerDefault0\":{\"$ref\":\"#/$defs/nonNegativeInteger\",\"default\""
		":0},\"simpleTypes\":{\"enum\":[\"array\",\"boolean\",\"integer\",\"nul"
		"l\",\"number\",\"object\",\"string\"]},\"stringArray\":{\"type\":\"arr"
		"ay\",\"items\":{\"type\":\"string\"},\"uniqueItems\":true,\"default\":"
		"[]}}}"},
	{"https://json-schema.org/draft/2020-12/meta/meta-data",
		"{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"$id\":"
		"\"https://json-schema.org/draft/2020-12/meta/meta-data\",\"$vocabulary"
		"\":{\"https://json-schema.org/draft/2020-12/vocab/meta-data\":true},\""
		"$dynamicAnchor\":\"meta\",\"title\":\"Meta-data vocabulary meta-schema"
		"\",\"type\":[\"object\",\"boolean\"],\"properties\":{\"title\":{\"type"
		"\":\"string\"},\"description\":{\"type\":\"string\"},\"default\":true,"
		"\"deprecated\":{\"type\":\"boolean\",\"default\":false},\"readOnly\":{"
		"\"type\":\"boolean\",\"default\":false},\"writeOnly\":{\"type\":\"bool"
		"ean\",\"default\":false},\"examples\":{\"type\":\"array\",\"items\":tr"
		"ue}}}"},
	{"https://json-schema.org/draft/2020-12/meta/format-annotation",
		"{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"$id\":"
		"\"https://json-schema.org/draft/2020-12/meta/format-annotation\",\"$vo"
		"cabulary\":{\"https://json-schema.org/draft/2020-12/vocab/format-annot"
		"ation\":true},\"$dynamicAnchor\":\"meta\",\"title\":\"Format vocabular"
		"y meta-schema for annotation results\",\"type\":[\"object\",\"boolean\""
		"],\"properties\":{\"format\":{\"type\":\"string\"}}}"},
	{"https://json-schema.org/draft/2020-12/meta/format-assertion",
		"{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"$id\":"
		"\"https://json-schema.org/draft/2020-12/meta/format-assertion\",\"$voc"
		"abulary\":{\"https://json-schema.org/draft/2020-12/vocab/format-assert"
		"ion\":true},\"$dynamicAnchor\":\"meta\",\"title\":\"Format vocabulary "
		"meta-schema for assertion results\",\"type\":[\"object\",\"boolean\"],"
		"\"properties\":{\"format\":{\"type\":\"string\"}}}"},
	{"https://json-schema.org/draft/2020-12/meta/content",
		"{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"$id\":"
		"\"https://json-schema.org/draft/2020-12/meta/content\",\"$vocabulary\""
		":{\"https://json-schema.org/draft/2020-12/vocab/content\":true},\"$dyn"
		"amicAnchor\":\"meta\",\"title\":\"Content vocabulary meta-schema\",\"t"
		"ype\":[\"object\",\"boolean\"],\"properties\":{\"contentEncoding\":{\""
		"type\":\"string\"},\"contentMediaType\":{\"type\":\"string\"},\"conten"
		"tSchema\":{\"$dynamicRef\":\"#meta\"}}}"},
};

/* The text of the built-in schema with this URI (no fragment), or NULL. */
const char *
jsonschema_builtin_text(const char *uri)
{
	int			i;

	for (i = 0; i < lengthof(builtin_schemas); i++)
		if (strcmp(builtin_schemas[i].uri, uri) == 0)
			return builtin_schemas[i].text;
	return NULL;
}
