/* openapi.c - the OpenAPI document (api/openapi.json, written by
 * api/openapi.py) built into the binary, so that GET /v1/openapi.json needs
 * no file at run time. The assembler includes the file's bytes as they are
 * (.incbin, relative to the directory make runs in) and a NUL after them. */
#include "api/api.h"

#include <stddef.h>

__asm__(".section .rodata\n"
	".balign 16\n"
	"flowd_openapi_start:\n"
	".incbin \"api/openapi.json\"\n"
	"flowd_openapi_end:\n"
	".byte 0\n"
	".previous\n");

extern const char flowd_openapi_start[] __asm__("flowd_openapi_start");
extern const char flowd_openapi_end[] __asm__("flowd_openapi_end");

const char *api_openapi_json(size_t *len)
{
	*len = (size_t)(flowd_openapi_end - flowd_openapi_start);
	return flowd_openapi_start;
}
