#include <stdio.h>
int main(void)
{
	puts("prepull: not yet");
	return 1;
}
