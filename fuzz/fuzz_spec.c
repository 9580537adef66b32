/* fuzz_spec.c - the flow spec validator (core/spec.c), as the API and the
 * state machine use it.
 *
 * Input: a spec document (JSON) on the first line; the rest, if any, the
 * parameters of a run (JSON) resolved against it.
 *
 * Beyond "no crash, no leak, no undefined behaviour":
 * - an error names its field and reason in valid UTF-8 (the API sends both
 *   in a JSON body);
 * - a spec the API accepts (default limits) is accepted by apply
 *   (SPEC_PARSE_APPLY, permissive limits, as fsm_flows.c parses the
 *   committed document), and normalizing is idempotent: the normalized
 *   document parses to the same text, also after spec_drop_doc;
 * - resolved parameters have an environment text each. */
#include <jansson.h>

#include "core/error.h"
#include "core/limits.h"
#include "core/spec.h"
#include "fuzz/fuzz.h"

static struct flowd_limits lim, apply_lim;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_setup();
	flowd_limits_defaults(&lim);
	/* what fsm_state.c gives apply: nothing refused for size */
	flowd_limits_defaults(&apply_lim);
	apply_lim.max_spec_bytes = (size_t)1 << 40;
	apply_lim.max_steps_per_flow = 1u << 30;
	apply_lim.max_params_per_flow = 1u << 30;
	apply_lim.max_deps_per_step = 1u << 30;
	apply_lim.max_argv = 1u << 30;
	apply_lim.max_env_per_step = 1u << 30;
	apply_lim.max_string_bytes = (size_t)1 << 40;
	apply_lim.max_param_bytes = (size_t)1 << 40;
	apply_lim.max_retries = 1u << 30;
	apply_lim.max_backoff_s = 1u << 30;
	apply_lim.max_timeout_s = 1u << 30;
	return 0;
}

static void check_error_text(const struct flowd_error *err)
{
	json_t *j = json_pack("{s:s, s:s, s:s}", "code", err->code, "field",
			      err->field, "message", err->message);

	FUZZ_CHECK(err->errc != FLOWD_OK, "a refusal without a kind");
	FUZZ_CHECK(j != NULL, "error text is not UTF-8: field=%s message=%s",
		   err->field, err->message);
	json_decref(j);
}

static void resolve(const struct flow_spec *spec, const char *text,
		    size_t len)
{
	json_t *given = len > 0 ? json_loadb(text, len, JSON_REJECT_DUPLICATES,
					     NULL)
				: NULL;
	json_t *out = NULL, *v;
	struct flowd_error err;
	const char *k;

	flowd_error_clear(&err);
	if (spec_params_resolve(spec, given, &lim, &out, &err) != 0) {
		check_error_text(&err);
	} else {
		FUZZ_CHECK(json_is_object(out), "resolved parameters");
		json_object_foreach(out, k, v) {
			char *env = spec_param_env_value(v);

			FUZZ_CHECK(env != NULL, "no env text for %s", k);
			free(env);
		}
		json_decref(out);
	}
	json_decref(given);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *line, *rest = NULL;
	size_t at = 0, len, rest_len = 0;
	struct flow_spec *spec = NULL, *again = NULL;
	struct flowd_error err;
	json_t *doc, *norm;

	if (!fuzz_line(data, size, &at, &line, &len))
		return 0;
	if (at < size) {
		rest = (const char *)data + at;
		rest_len = size - at;
	}
	doc = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL);
	if (doc == NULL)
		return 0;
	flowd_error_clear(&err);
	if (spec_parse(doc, &lim, &spec, &err) != 0) {
		check_error_text(&err);
		FUZZ_CHECK(spec == NULL, "a refused spec was returned");
		/* apply never refuses what the API took; what the API refused
		 * may still be parsed by apply (an older rule): no crash */
		if (spec_parse_ex(doc, &apply_lim, SPEC_PARSE_APPLY, &again,
				  &err) == 0)
			spec_free(again);
		json_decref(doc);
		return 0;
	}
	json_decref(doc);
	FUZZ_CHECK(spec->doc != NULL && spec->doc_text != NULL, "no document");

	/* apply parses the committed (normalized) document */
	norm = json_loads(spec->doc_text, 0, NULL);
	FUZZ_CHECK(norm != NULL, "doc_text is not JSON: %s", spec->doc_text);
	flowd_error_clear(&err);
	FUZZ_CHECK(spec_parse_ex(norm, &apply_lim, SPEC_PARSE_APPLY, &again,
				 &err) == 0,
		   "apply refuses an accepted spec: %s: %s (%s)", err.field,
		   err.message, spec->doc_text);
	json_decref(norm);
	FUZZ_CHECK(strcmp(again->doc_text, spec->doc_text) == 0,
		   "normalizing is not idempotent:\n%s\n%s", spec->doc_text,
		   again->doc_text);
	FUZZ_CHECK(again->n_steps == spec->n_steps &&
			   again->n_params == spec->n_params &&
			   again->n_schedules == spec->n_schedules &&
			   again->n_events == spec->n_events &&
			   again->n_on_finish == spec->n_on_finish,
		   "the normalized spec differs");
	/* the state machine keeps the text only */
	spec_drop_doc(again);
	norm = spec_doc(again);
	FUZZ_CHECK(norm != NULL, "spec_doc after spec_drop_doc");
	json_decref(norm);
	spec_free(again);

	resolve(spec, rest, rest_len);
	spec_free(spec);
	return 0;
}
