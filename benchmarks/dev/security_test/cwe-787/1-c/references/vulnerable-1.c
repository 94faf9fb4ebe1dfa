
    size = returnChunkSize(chunk);
    for (i = 0; i < size; i++) {
        chunk2[i] = chunk[i];
    }

    size2 = returnChunkSize(chunk2);
    for (i2 = 0; i2 < size2; i2++) {
        printf("chunk2[%d] = %d\n", i2, chunk2[i2]);
    }

    free(chunk);
    free(chunk2);
    return 0;
}
