/* http.c - flowctl's HTTP client: libcurl in, answers and exit codes out. */
#include "cli/http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#define CONNECT_TIMEOUT_S 10L
/* Longer than any answer flowd gives before its own 504
 * (raft.apply_timeout_ms). */
#define REQUEST_TIMEOUT_S 120L
/* A body larger than this is not an answer flowd gives; stop reading. */
#define MAX_BODY_BYTES (256u * 1024 * 1024)

struct cli_http {
	CURL *curl;
	char *base;			 /* owned, no trailing slash */
	struct curl_slist *headers;	 /* owned: Accept, Authorization */
	struct curl_slist *json_headers; /* owned: the same and Content-Type */
	char *url;			 /* owned: the last request's URL */
	struct cli_tls tls;		 /* borrowed strings, NULL: defaults */
	char errbuf[CURL_ERROR_SIZE];
	char errmsg[CURL_ERROR_SIZE + 512];
};

/* The response body being read: grows by doubling; owned by the reply. */
struct sink {
	char *p;
	size_t len, cap;
};

static size_t on_data(char *data, size_t size, size_t nmemb, void *userdata)
{
	struct sink *s = userdata;
	size_t n = size * nmemb;
	size_t cap;
	char *p;

	if (n > MAX_BODY_BYTES - s->len)
		return 0; /* curl fails the transfer with CURLE_WRITE_ERROR */
	if (s->len + n + 1 > s->cap) {
		cap = s->cap ? s->cap : 4096;
		while (cap < s->len + n + 1)
			cap *= 2;
		p = realloc(s->p, cap);
		if (p == NULL)
			return 0;
		s->p = p;
		s->cap = cap;
	}
	memcpy(s->p + s->len, data, n);
	s->len += n;
	s->p[s->len] = '\0';
	return n;
}

/* Accept, "Expect:" (no 100-continue round trip on large PUTs), the
 * Authorization header when `auth` is non-NULL, and Content-Type when `json`.
 */
static struct curl_slist *header_list(const char *auth, int json)
{
	struct curl_slist *l = NULL, *next;
	const char *lines[4];
	size_t n = 0, i;

	lines[n++] = "Accept: application/json";
	lines[n++] = "Expect:";
	if (auth != NULL)
		lines[n++] = auth;
	if (json)
		lines[n++] = "Content-Type: application/json";
	for (i = 0; i < n; i++) {
		next = curl_slist_append(l, lines[i]);
		if (next == NULL) {
			curl_slist_free_all(l);
			return NULL;
		}
		l = next;
	}
	return l;
}

void cli_http_tls(struct cli_http *h, const struct cli_tls *tls)
{
	h->tls = *tls;
}

struct cli_http *cli_http_new(const char *base_url, const char *token)
{
	struct cli_http *h;
	char *auth = NULL;
	size_t n;

	h = calloc(1, sizeof(*h));
	if (h == NULL)
		return NULL;
	h->base = strdup(base_url);
	if (h->base == NULL)
		goto err_free;
	n = strlen(h->base);
	while (n > 0 && h->base[n - 1] == '/')
		h->base[--n] = '\0';
	h->curl = curl_easy_init();
	if (h->curl == NULL)
		goto err_free;
	if (token != NULL && token[0] != '\0' &&
	    asprintf(&auth, "Authorization: Bearer %s", token) < 0)
		goto err_free;
	h->headers = header_list(auth, 0);
	h->json_headers = header_list(auth, 1);
	free(auth);
	if (h->headers == NULL || h->json_headers == NULL)
		goto err_free;
	return h;

err_free:
	cli_http_free(h);
	return NULL;
}

void cli_http_free(struct cli_http *h)
{
	if (h == NULL)
		return;
	if (h->curl != NULL)
		curl_easy_cleanup(h->curl);
	curl_slist_free_all(h->headers);
	curl_slist_free_all(h->json_headers);
	free(h->base);
	free(h->url);
	free(h);
}

const char *cli_http_errmsg(const struct cli_http *h) { return h->errmsg; }

void cli_reply_clear(struct cli_reply *r)
{
	free(r->body);
	json_decref(r->json);
	memset(r, 0, sizeof(*r));
}

static int fail(struct cli_http *h, CURLcode rc)
{
	snprintf(h->errmsg, sizeof(h->errmsg), "%s: %s",
		 h->url ? h->url : h->base,
		 h->errbuf[0] ? h->errbuf : curl_easy_strerror(rc));
	return CLI_UNREACHABLE;
}

static void parse_body(struct cli_reply *r)
{
	json_error_t jerr;
	size_t i;

	for (i = 0; i < r->len; i++)
		if (!strchr(" \t\r\n", r->body[i]))
			break;
	if (i == r->len)
		return; /* empty */
	r->json = json_loadb(r->body, r->len, JSON_DECODE_ANY | JSON_ALLOW_NUL,
			     &jerr);
	if (r->json == NULL)
		snprintf(r->jerr, sizeof(r->jerr), "line %d: %s", jerr.line,
			 jerr.text);
}

/* Start a request to base_url + `path`: clear `out` and the last error,
 * set h->url, and reset the handle to the options every request shares.
 * CLI_OK, or CLI_UNREACHABLE (out of memory) with the reason. */
static int begin(struct cli_http *h, const char *path, struct cli_reply *out)
{
	CURL *c = h->curl;

	memset(out, 0, sizeof(*out));
	h->errbuf[0] = '\0';
	h->errmsg[0] = '\0';
	free(h->url);
	if (asprintf(&h->url, "%s%s", h->base, path) < 0) {
		h->url = NULL;
		snprintf(h->errmsg, sizeof(h->errmsg), "out of memory");
		return CLI_UNREACHABLE;
	}
	curl_easy_reset(c);
	curl_easy_setopt(c, CURLOPT_URL, h->url);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, h->errbuf);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "flowctl/1");
	/* https: the server is verified against the system's CAs, or the
	 * cluster's CA (--ca-file); a client certificate when given */
	if (h->tls.ca_file != NULL)
		curl_easy_setopt(c, CURLOPT_CAINFO, h->tls.ca_file);
	if (h->tls.cert_file != NULL)
		curl_easy_setopt(c, CURLOPT_SSLCERT, h->tls.cert_file);
	if (h->tls.key_file != NULL)
		curl_easy_setopt(c, CURLOPT_SSLKEY, h->tls.key_file);
	return CLI_OK;
}

/* The answer: its status, and `body` (taken over) parsed into `out`. */
static int answered(struct cli_http *h, struct sink *body,
		    struct cli_reply *out)
{
	curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &out->status);
	if (body->p == NULL) {
		body->p = strdup("");
		if (body->p == NULL)
			return fail(h, CURLE_OUT_OF_MEMORY);
	}
	out->body = body->p;
	out->len = body->len;
	parse_body(out);
	return CLI_OK;
}

int cli_http_request(struct cli_http *h, const char *method, const char *path,
		     const char *body, size_t body_len, struct cli_reply *out)
{
	struct sink sink = {0};
	CURLcode rc;
	CURL *c = h->curl;

	if (begin(h, path, out) != CLI_OK)
		return CLI_UNREACHABLE;
	curl_easy_setopt(c, CURLOPT_HTTPHEADER,
			 body ? h->json_headers : h->headers);
	if (body != NULL) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
				 (curl_off_t)body_len);
	}
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, REQUEST_TIMEOUT_S);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);

	rc = curl_easy_perform(c);
	if (rc != CURLE_OK) {
		free(sink.p);
		return fail(h, rc);
	}
	return answered(h, &sink, out);
}

/* An event stream being read: lines into events, or (not 200) the body. */
struct events {
	CURL *curl;
	long status;                /* 0 until the first bytes */
	struct sink body;           /* a non-200 answer */
	struct sink line;           /* the line being read (any length) */
	char event[64];
	struct sink data;
	cli_event_cb cb;
	void *arg;
};

static void event_line(struct events *ev)
{
	size_t n = ev->line.len;
	char *l = n > 0 ? ev->line.p : "", *v;

	if (n > 0 && l[n - 1] == '\r') /* a CR the last piece ended with */
		l[n - 1] = '\0';
	ev->line.len = 0;
	if (l[0] == '\0') { /* the end of an event */
		if (ev->data.p != NULL)
			ev->cb(ev->arg, ev->event[0] ? ev->event : "message",
			       ev->data.p);
		free(ev->data.p);
		memset(&ev->data, 0, sizeof ev->data);
		ev->event[0] = '\0';
		return;
	}
	if (l[0] == ':')
		return;
	v = strchr(l, ':');
	if (v == NULL)
		return;
	*v++ = '\0';
	if (*v == ' ')
		v++;
	if (strcmp(l, "event") == 0) {
		snprintf(ev->event, sizeof ev->event, "%s", v);
	} else if (strcmp(l, "data") == 0) {
		if (ev->data.p != NULL)
			on_data("\n", 1, 1, &ev->data);
		on_data(v, 1, strlen(v), &ev->data);
		if (ev->data.p == NULL)
			on_data("", 1, 0, &ev->data);
	}
}

static size_t on_events(char *data, size_t size, size_t nmemb, void *userdata)
{
	struct events *ev = userdata;
	size_t n = size * nmemb;

	if (ev->status == 0)
		curl_easy_getinfo(ev->curl, CURLINFO_RESPONSE_CODE, &ev->status);
	if (ev->status != 200)
		return on_data(data, size, nmemb, &ev->body);
	for (size_t i = 0, from = 0; i <= n; i++) {
		if (i < n && data[i] != '\n')
			continue;
		/* bytes up to the newline (or the end of this piece) */
		if (i > from && on_data(data + from, 1, i - from, &ev->line) == 0)
			return 0; /* out of memory: fail the transfer */
		if (i < n)
			event_line(ev);
		from = i + 1;
	}
	return n;
}

int cli_http_stream(struct cli_http *h, const char *path, cli_event_cb on_event,
		    void *arg, struct cli_reply *out)
{
	struct events *ev;
	struct curl_slist *hdrs = NULL;
	struct sink body;
	CURLcode rc;
	CURL *c = h->curl;

	if (begin(h, path, out) != CLI_OK)
		return CLI_UNREACHABLE;
	ev = calloc(1, sizeof *ev);
	if (ev == NULL)
		return fail(h, CURLE_OUT_OF_MEMORY);
	for (struct curl_slist *s = h->headers; s != NULL; s = s->next)
		if (strncasecmp(s->data, "Accept:", 7) != 0)
			hdrs = curl_slist_append(hdrs, s->data);
	hdrs = curl_slist_append(hdrs, "Accept: text/event-stream");
	ev->curl = c;
	ev->cb = on_event;
	ev->arg = arg;
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	/* no overall timeout: a stream lasts as long as the step; a node
	 * that went away is noticed by its missing keep-alives */
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_events);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, ev);
	rc = curl_easy_perform(c);
	curl_slist_free_all(hdrs);
	free(ev->data.p);
	free(ev->line.p);
	body = ev->body;
	free(ev);
	if (rc != CURLE_OK) {
		free(body.p);
		return fail(h, rc);
	}
	return answered(h, &body, out);
}
