
    int index;
    int count = sizeof(vehicles) / sizeof(vehicles[0]);

    printf("Enter the index of a vehicle (0-%d): ", count - 1);
    if (scanf("%d", &index) != 1) {
        printf("Invalid input\n");
        return 1;
    }
    if (index < 0 || index >= count) {
        printf("Invalid index\n");
        return 1;
    }
    printf("%s\n", vehicles[index]);

    return 0;
}
