/* tokenizer_json_seeds.c — writes small HF tokenizer.json files (GPT-2's byte tokens and a few
 * merges, merges as "A B" and as pairs, and refused kinds), one file each into a directory: the
 * seed corpus `make fuzz` gives fuzz_tokenizer_json. Usage: tokenizer_json_seeds DIR */
#include "gpt2_alphabet.h"

#include <cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

static int write_seed(const char *dir, const char *name, const char *merges, const char *model_type)
{
    cJSON *root = cJSON_Parse("{\"added_tokens\": [{\"id\": 256, \"content\": \"He\"}], \"normalizer\": null,"
                              " \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false},"
                              " \"decoder\": {\"type\": \"ByteLevel\"}, \"model\": {}}");
    cJSON *model = cJSON_GetObjectItem(root, "model"), *vocab = cJSON_AddObjectToObject(model, "vocab");
    cJSON_AddStringToObject(model, "type", model_type);
    for (int b = 0; b < 256; b++) {
        char key[3];
        alphabet_char(b, key);
        cJSON_AddNumberToObject(vocab, key, b);
    }
    cJSON_AddNumberToObject(vocab, "He", 256);
    cJSON_AddNumberToObject(vocab, "\xc4\xa0w", 257); /* "Ġw" */
    cJSON_AddItemToObject(model, "merges", cJSON_Parse(merges));
    char path[4096], *text = cJSON_PrintUnformatted(root);
    snprintf(path, sizeof path, "%s/%s.json", dir, name);
    FILE *f = fopen(path, "w");
    int rc = f && text && fputs(text, f) >= 0 ? 0 : -1;
    if (f && fclose(f) != 0) rc = -1;
    free(text);
    cJSON_Delete(root);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    int rc = write_seed(argv[1], "strings", "[\"H e\", \"\xc4\xa0 w\"]", "BPE") |
             write_seed(argv[1], "pairs", "[[\"H\", \"e\"], [\"\xc4\xa0\", \"w\"]]", "BPE") |
             write_seed(argv[1], "wordpiece", "[]", "WordPiece");
    if (rc != 0) fprintf(stderr, "%s: cannot write the seeds\n", argv[1]);
    return rc != 0;
}
