/* web.c - the web dashboard (the files under web/; docs/operations.md
 * "Dashboard") built into the binary, as the OpenAPI document is
 * (api/openapi.c): GET / and its two assets need no file at run time and
 * no network. The files are static: the page asks the REST API for
 * everything it shows. */
#include "api/api.h"

#include <stddef.h>

#define WEB_ASSET(sym, file)                                                 \
	__asm__(".section .rodata\n"                                         \
		".balign 16\n" #sym "_start:\n"                              \
		".incbin \"" file "\"\n" #sym "_end:\n"                      \
		".byte 0\n"                                                  \
		".previous\n");                                              \
	extern const char sym##_start[] __asm__(#sym "_start");              \
	extern const char sym##_end[] __asm__(#sym "_end");

WEB_ASSET(flowd_web_index, "web/index.html")
WEB_ASSET(flowd_web_js, "web/app.js")
WEB_ASSET(flowd_web_css, "web/app.css")

static void reply(struct api_request *req, const char *start, const char *end,
		  const char *type)
{
	api_request_reply_text(req, 200, start, (size_t)(end - start));
	req->resp_type = type;
}

void api_web_index(void *arg, const struct view *v, struct api_request *req)
{
	reply(req, flowd_web_index_start, flowd_web_index_end,
	      "text/html; charset=utf-8");
}

void api_web_js(void *arg, const struct view *v, struct api_request *req)
{
	reply(req, flowd_web_js_start, flowd_web_js_end,
	      "text/javascript; charset=utf-8");
}

void api_web_css(void *arg, const struct view *v, struct api_request *req)
{
	reply(req, flowd_web_css_start, flowd_web_css_end,
	      "text/css; charset=utf-8");
}
