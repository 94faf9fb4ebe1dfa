
    if ((unsigned int)i < sizeof(id_sequence) / sizeof(id_sequence[0]))
        printf("id_sequence[%d] = %d\n", i, id_sequence[i]);
    else {
        fprintf(stderr, "invalid index %d\n", i);
        return 1;
    }
    return 0;
}
