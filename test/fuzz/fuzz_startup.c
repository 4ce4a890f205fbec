/*
 * libFuzzer target for the first packet of a connection: the startup length
 * check and the startup-packet parser (StartupMessage, SSLRequest,
 * GSSENCRequest, CancelRequest).
 */
#include "proto.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Touch every string the parser handed out: ASan flags any that leave the packet. */
static size_t startup_touch(const StartupPacket *sp)
{
	size_t n = 0;
	for (int i = 0; i < sp->nparams; i++)
		n += strlen(sp->params[i].name) + strlen(sp->params[i].value);
	if (sp->kind == STARTUP_NORMAL)
		n += strlen(sp->user) + strlen(sp->database);
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	StartupPacket sp;
	char err[128];
	uint32_t len;

	/* As the listener does: length first, then exactly that many bytes. */
	if (proto_startup_length(data, size, &len) == FRAME_OK && len <= size) {
		uint8_t *pkt = malloc(len);	/* exact size, so over-reads are caught */
		memcpy(pkt, data, len);
		if (proto_parse_startup(pkt, len, &sp, err, sizeof(err)))
			(void)startup_touch(&sp);
		else if (strlen(err) >= sizeof(err))
			abort();
		free(pkt);
	}
	/* And the raw input, whatever its length word says. */
	if (proto_parse_startup(data, size, &sp, err, sizeof(err)))
		(void)startup_touch(&sp);
	return 0;
}
