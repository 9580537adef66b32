/* test_auth.c - api/auth.c: bearer tokens by hash, signed node requests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "api/auth.h"

static const char *lookup(const struct api_token *t, size_t n, const char *h)
{
	const struct api_token *found = api__auth_lookup(t, n, h);

	return found != NULL ? found->name : NULL;
}

static void tokens_plain_and_hashed(void **state)
{
	struct api_token t[3];
	char hashed[72];

	memset(t, 0, sizeof t);
	strcpy(t[0].name, "admin-1");
	t[0].role = API_ROLE_ADMIN;
	assert_int_equal(api_token_set(&t[0], "adm1n-secret-000"), 0);
	strcpy(t[1].name, "operator-1");
	t[1].role = API_ROLE_OPERATOR;
	api_token_hash_text("operator-secret-1", 17, hashed);
	assert_memory_equal(hashed, "sha256:", 7);
	assert_int_equal(strlen(hashed), 71);
	assert_int_equal(api_token_set(&t[1], hashed), 0);
	strcpy(t[2].name, "reader-1");
	t[2].role = API_ROLE_READER;
	assert_int_equal(api_token_set(&t[2], "read-only-000000"), 0);

	assert_string_equal(lookup(t, 3, "Bearer adm1n-secret-000"), "admin-1");
	assert_string_equal(lookup(t, 3, "bearer  adm1n-secret-000 "),
			    "admin-1");
	/* the hashed entry matches the token, never its hash */
	assert_string_equal(lookup(t, 3, "Bearer operator-secret-1"),
			    "operator-1");
	assert_null(lookup(t, 3, hashed));
	assert_string_equal(lookup(t, 3, "Bearer read-only-000000"),
			    "reader-1");
	assert_null(lookup(t, 3, NULL));
	assert_null(lookup(t, 3, ""));
	assert_null(lookup(t, 3, "Bearer"));
	assert_null(lookup(t, 3, "Bearer "));
	assert_null(lookup(t, 3, "Basic adm1n-secret-000"));
	assert_null(lookup(t, 3, "Beareradm1n-secret-000"));
	assert_null(lookup(t, 3, "Bearer adm1n-secret-00"));
	assert_null(lookup(t, 3, "Bearer adm1n-secret-0000"));
	assert_null(lookup(t, 0, "Bearer adm1n-secret-000"));
	/* a malformed hash is refused */
	assert_int_equal(api_token_set(&t[0], "sha256:abc"), -1);
	assert_int_equal(
		api_token_set(&t[0], "sha256:zz00000000000000000000000000000000"
				     "000000000000000000000000000000"),
		-1);
}

static void roles_by_name(void **state)
{
	assert_int_equal(api_role_parse("reader"), API_ROLE_READER);
	assert_int_equal(api_role_parse("operator"), API_ROLE_OPERATOR);
	assert_int_equal(api_role_parse("admin"), API_ROLE_ADMIN);
	assert_int_equal(api_role_parse("node"), -1);
	assert_int_equal(api_role_parse("root"), -1);
	assert_true(API_ROLE_READER < API_ROLE_OPERATOR &&
		    API_ROLE_OPERATOR < API_ROLE_ADMIN);
}

#define SECRET "cluster-secret-0123456789"
#define NOW 1764950000000LL

static int verify(const char *secret, const char *node, const char *sig,
		  const char *method, const char *target, const char *body,
		  const char *behalf, int64_t now, uint64_t *id)
{
	struct flowd_error err;

	return api__node_verify(secret, node, sig, method, target, body,
				body ? strlen(body) : 0, behalf, now, id,
				&err);
}

static void node_signatures(void **state)
{
	char sig[API_NODE_AUTH_MAX];
	const char *body = "{\"v\":1,\"op\":\"node_up\"}";
	uint64_t id = 0;

	assert_int_equal(api_node_sign(SECRET, 2, NOW, "POST",
				       "/internal/v1/commands", body,
				       strlen(body), NULL, sig),
			 0);
	assert_int_equal(verify(SECRET, "2", sig, "POST",
				"/internal/v1/commands", body, NULL, NOW, &id),
			 0);
	assert_int_equal(id, 2);
	/* within the skew either way */
	assert_int_equal(verify(SECRET, "2", sig, "POST",
				"/internal/v1/commands", body, NULL,
				NOW + API_NODE_SKEW_MS, &id),
			 0);
	assert_int_equal(verify(SECRET, "2", sig, "POST",
				"/internal/v1/commands", body, NULL,
				NOW - API_NODE_SKEW_MS - 1, &id),
			 -1);
	/* every covered part changes the signature */
	assert_int_equal(verify("another-secret-0123", "2", sig, "POST",
				"/internal/v1/commands", body, NULL, NOW, &id),
			 -1);
	assert_int_equal(verify(SECRET, "3", sig, "POST",
				"/internal/v1/commands", body, NULL, NOW, &id),
			 -1);
	assert_int_equal(verify(SECRET, "2", sig, "PUT",
				"/internal/v1/commands", body, NULL, NOW, &id),
			 -1);
	assert_int_equal(verify(SECRET, "2", sig, "POST", "/v1/flows/x", body,
				NULL, NOW, &id),
			 -1);
	assert_int_equal(verify(SECRET, "2", sig, "POST",
				"/internal/v1/commands", "{}", NULL, NOW, &id),
			 -1);
	assert_int_equal(verify(SECRET, "2", sig, "POST",
				"/internal/v1/commands", body,
				"admin admin-1 127.0.0.1", NOW, &id),
			 -1);
	/* malformed */
	assert_int_equal(verify(NULL, "2", sig, "POST", "/internal/v1/commands",
				body, NULL, NOW, &id),
			 -1);
	assert_int_equal(verify(SECRET, NULL, sig, "POST",
				"/internal/v1/commands", body, NULL, NOW, &id),
			 -1);
	assert_int_equal(verify(SECRET, "02", sig, "POST",
				"/internal/v1/commands", body, NULL, NOW, &id),
			 -1);
	assert_int_equal(verify(SECRET, "2", "123", "POST",
				"/internal/v1/commands", body, NULL, NOW, &id),
			 -1);
	sig[strlen(sig) - 1] = sig[strlen(sig) - 1] == '0' ? '1' : '0';
	assert_int_equal(verify(SECRET, "2", sig, "POST",
				"/internal/v1/commands", body, NULL, NOW, &id),
			 -1);
	/* on behalf of a client, covered by the signature */
	assert_int_equal(api_node_sign(SECRET, 1, NOW, "GET", "/v1/runs", NULL,
				       0, "reader reader-1 127.0.0.2", sig),
			 0);
	assert_int_equal(verify(SECRET, "1", sig, "GET", "/v1/runs", NULL,
				"reader reader-1 127.0.0.2", NOW, &id),
			 0);
	assert_int_equal(verify(SECRET, "1", sig, "GET", "/v1/runs", NULL,
				"admin reader-1 127.0.0.2", NOW, &id),
			 -1);
}

static void on_behalf_values(void **state)
{
	enum api_role role;
	char name[API_TOKEN_NAME_MAX], addr[48];

	assert_int_equal(api__on_behalf_parse("operator ci-bot 10.0.0.7", &role,
					      name, addr),
			 0);
	assert_int_equal(role, API_ROLE_OPERATOR);
	assert_string_equal(name, "ci-bot");
	assert_string_equal(addr, "10.0.0.7");
	assert_int_equal(api__on_behalf_parse("node n 1.2.3.4", &role, name,
					      addr),
			 -1);
	assert_int_equal(api__on_behalf_parse("admin", &role, name, addr), -1);
	assert_int_equal(api__on_behalf_parse(NULL, &role, name, addr), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(tokens_plain_and_hashed),
		cmocka_unit_test(roles_by_name),
		cmocka_unit_test(node_signatures),
		cmocka_unit_test(on_behalf_values),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
